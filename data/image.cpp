// JPEG decode/encode through jpeglib.h with an error manager that throws instead of exit().
//
// Why setjmp/longjmp and not a C++ throw from error_exit: libjpeg is C; unwinding a C++
// exception through its frames is undefined. error_exit longjmps back to the frame that
// called into libjpeg; that frame destroys the decompressor and throws DataError.
#include "data/image.h"

#include <csetjmp>
#include <cstdio>
#include <algorithm>

#include <jpeglib.h>
#include <jerror.h>

#include "core/errors.h"

namespace vit::data {
namespace {

struct ErrorManager {
  jpeg_error_mgr pub;
  jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

void on_error_exit(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<ErrorManager*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, err->message);
  longjmp(err->jump, 1);
}

void on_output_message(j_common_ptr) {}  // warnings (e.g. "premature end of data") stay quiet

// A truncated stream is only a warning to libjpeg (it pads the rest with grey); here it is an
// error, so the file is skipped rather than trained on. Other warnings (extraneous bytes before
// a marker, common in ImageNet) leave a correct image and stay quiet.
void on_emit_message(j_common_ptr cinfo, int msg_level) {
  if (msg_level < 0 && cinfo->err->msg_code == JWRN_JPEG_EOF) on_error_exit(cinfo);
}

void install(jpeg_decompress_struct& cinfo, ErrorManager& err) {
  cinfo.err = jpeg_std_error(&err.pub);
  err.pub.error_exit = on_error_exit;
  err.pub.output_message = on_output_message;
  err.pub.emit_message = on_emit_message;
  err.message[0] = 0;
}

}  // namespace

JpegInfo jpeg_info(const std::string& bytes, const std::string& name) {
  jpeg_decompress_struct cinfo;
  ErrorManager err;
  install(cinfo, err);
  if (setjmp(err.jump)) {
    jpeg_destroy_decompress(&cinfo);
    VIT_THROW(DataError, name, ": not a readable JPEG (", err.message, ")");
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size());
  jpeg_read_header(&cinfo, TRUE);
  JpegInfo info{cinfo.image_height, cinfo.image_width};
  jpeg_destroy_decompress(&cinfo);
  return info;
}

Image decode_jpeg(const std::string& bytes, const std::string& name, int scale_denom) {
  jpeg_decompress_struct cinfo;
  ErrorManager err;
  install(cinfo, err);
  Image image;
  std::vector<uint8_t> cmyk_row;
  if (setjmp(err.jump)) {
    jpeg_destroy_decompress(&cinfo);
    VIT_THROW(DataError, name, ": corrupt JPEG (", err.message, ")");
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size());
  jpeg_read_header(&cinfo, TRUE);
  const bool cmyk = cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK;
  cinfo.out_color_space = cmyk ? JCS_CMYK : JCS_RGB;
  cinfo.scale_num = 1;
  cinfo.scale_denom = static_cast<unsigned>(scale_denom);
  cinfo.dct_method = JDCT_ISLOW;
  jpeg_start_decompress(&cinfo);
  image.height = cinfo.output_height;
  image.width = cinfo.output_width;
  image.pixels.resize(static_cast<size_t>(image.height * image.width * 3));
  if (cmyk) cmyk_row.resize(static_cast<size_t>(image.width * 4));
  while (cinfo.output_scanline < cinfo.output_height) {
    uint8_t* dst = image.row(cinfo.output_scanline);
    JSAMPROW rows[1] = {cmyk ? cmyk_row.data() : dst};
    jpeg_read_scanlines(&cinfo, rows, 1);
    if (cmyk) {  // Adobe writes inverted CMYK: value = 255 - ink, so R = C' * K' / 255.
      for (int64_t x = 0; x < image.width; ++x) {
        const int k = cmyk_row[4 * x + 3];
        for (int c = 0; c < 3; ++c) dst[3 * x + c] = static_cast<uint8_t>((cmyk_row[4 * x + c] * k + 127) / 255);
      }
    }
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  return image;
}

int choose_scale_denom(double region_h, double region_w, int64_t need_h, int64_t need_w) {
  int best = 1;
  for (int d : {2, 4, 8}) {
    if (region_h / d >= static_cast<double>(need_h) && region_w / d >= static_cast<double>(need_w)) best = d;
  }
  return best;
}

bool jpeg_complete(const std::string& bytes) {
  // From the end: an EOI before any SOS. Inside entropy-coded data a 0xFF byte is followed by
  // 0x00 or a restart marker, never 0xD9 or 0xDA, and an embedded thumbnail (with its own EOI)
  // lies before the main image's first SOS; so a whole file stops at once (its EOI is within
  // its last bytes) and a truncated one reaches the SOS of the scan it was cut in.
  const auto* b = reinterpret_cast<const unsigned char*>(bytes.data());
  for (size_t i = bytes.size(); i-- > 1;) {
    if (b[i - 1] != 0xFF) continue;
    if (b[i] == 0xD9) return true;
    if (b[i] == 0xDA) return false;
  }
  return false;
}

std::string encode_jpeg(const Image& image, int quality, bool progressive) {
  jpeg_compress_struct cinfo;
  ErrorManager err;
  cinfo.err = jpeg_std_error(&err.pub);
  err.pub.error_exit = on_error_exit;
  unsigned char* buffer = nullptr;
  unsigned long size = 0;
  if (setjmp(err.jump)) {
    jpeg_destroy_compress(&cinfo);
    free(buffer);
    VIT_THROW(DataError, "JPEG encode failed (", err.message, ")");
  }
  jpeg_create_compress(&cinfo);
  jpeg_mem_dest(&cinfo, &buffer, &size);
  cinfo.image_width = static_cast<JDIMENSION>(image.width);
  cinfo.image_height = static_cast<JDIMENSION>(image.height);
  cinfo.input_components = 3;
  cinfo.in_color_space = JCS_RGB;
  jpeg_set_defaults(&cinfo);
  jpeg_set_quality(&cinfo, quality, TRUE);
  if (progressive) jpeg_simple_progression(&cinfo);
  jpeg_start_compress(&cinfo, TRUE);
  while (cinfo.next_scanline < cinfo.image_height) {
    JSAMPROW rows[1] = {const_cast<uint8_t*>(image.row(cinfo.next_scanline))};
    jpeg_write_scanlines(&cinfo, rows, 1);
  }
  jpeg_finish_compress(&cinfo);
  std::string out(reinterpret_cast<char*>(buffer), size);
  jpeg_destroy_compress(&cinfo);
  free(buffer);
  return out;
}

}  // namespace vit::data
