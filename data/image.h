// Image: a decoded 8-bit RGB picture in host memory (height x width x 3, interleaved), and the
// JPEG codec built on libjpeg-turbo's jpeglib.h.
//
// Decoding never calls exit(): libjpeg's fatal errors are turned into DataError (which the
// loader counts and skips or rethrows according to data.on_corrupt). Grayscale and CMYK files
// are converted to RGB. Other formats (PNG, WebP) are not decoded: they raise DataError.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace vit::data {

struct Image {
  int64_t height = 0;
  int64_t width = 0;
  std::vector<uint8_t> pixels;  // height * width * 3, RGB interleaved, row-major
  uint8_t* row(int64_t y) { return pixels.data() + y * width * 3; }
  const uint8_t* row(int64_t y) const { return pixels.data() + y * width * 3; }
};

struct JpegInfo {
  int64_t height = 0;
  int64_t width = 0;
};

// Reads only the header. Throws DataError (mentioning `name`) when it is not a JPEG.
JpegInfo jpeg_info(const std::string& bytes, const std::string& name);

// Decodes at full size, or with libjpeg's scaled DCT at 1/scale_denom (1, 2, 4 or 8) of it:
// a 500x375 JPEG at scale_denom 2 decodes straight to 250x188, much faster than decoding
// and shrinking. Throws DataError naming `name` on a corrupt or truncated file.
Image decode_jpeg(const std::string& bytes, const std::string& name, int scale_denom = 1);

// The largest scale_denom in {1, 2, 4, 8} for which a `region_h` x `region_w` region of the
// full image still covers at least `need_h` x `need_w` pixels after scaling.
int choose_scale_denom(double region_h, double region_w, int64_t need_h, int64_t need_w);

// True when the bytes hold a complete JPEG stream: an end-of-image marker after the last
// start-of-scan marker (found from the end: a whole file answers at once). A truncated file is an error for decode_jpeg, but a GPU decoder may
// turn it into grey without one; the GPU path (gpu_decode.h) refuses it by this test.
bool jpeg_complete(const std::string& bytes);

// Encodes RGB to baseline JPEG, or progressive when asked (tests, benchmarks and `vit-data pack`
// of raw images).
std::string encode_jpeg(const Image& image, int quality = 90, bool progressive = false);

}  // namespace vit::data
