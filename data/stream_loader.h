// The streaming loader: worker threads read, decode (libjpeg-turbo, scaled DCT when the crop is
// much larger than the model's input) and augment each sample on the host into a pinned uint8
// batch; a bounded queue keeps up to max(data.prefetch_batches, data.num_workers) batches in
// flight; the copy to the device overlaps compute (device_copy.h); RandAugment, normalisation,
// random erasing and mixing run on the device (augment.h). With GPU decode (data.decode,
// gpu_decode.h) the workers only read the bytes and draw each sample's crop and flip; one more
// thread decodes each batch with nvJPEG and crops it on the device, two batches ahead.
//
// Each worker builds whole batches; batches are handed out strictly in (epoch, step) order,
// whatever order the workers finish in, so the output does not depend on the thread count.
// A JPEG that does not decode follows data.on_corrupt: fail -> DataError naming the file,
// raised from next() on the training thread; skip -> counted and warned; in training its slot
// takes a copy of another sample of the same batch, in evaluation its mask is 0.
#pragma once

#include <memory>

#include "data/loader.h"
#include "data/sampler.h"
#include "data/source.h"

namespace vit::data {

std::unique_ptr<Loader> make_stream_loader(std::shared_ptr<const EncodedSource> source,
                                           std::shared_ptr<const BatchPlanner> planner, const DataConfig& config,
                                           const LoaderOptions& options);

}  // namespace vit::data
