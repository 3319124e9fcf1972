# Third-party libraries, found once and normalised to targets the project links against:
#   vit::torch, MPI::MPI_CXX, vit::yaml, Boost::program_options, JPEG::JPEG, OpenSSL::Crypto, PkgConfig::VIT_LIBZIP,
#   nlohmann_json::nlohmann_json and (with
#   CUDA) vit::nccl.
# LibTorch comes from a PyTorch install (setup script: a venv outside the clone) or any
# Torch_DIR / CMAKE_PREFIX_PATH the user passes.

if(VIT_USE_CCACHE)
  find_program(VIT_CCACHE ccache)
  if(VIT_CCACHE)
    set(CMAKE_CXX_COMPILER_LAUNCHER ${VIT_CCACHE})
    set(CMAKE_CUDA_COMPILER_LAUNCHER ${VIT_CCACHE})
  endif()
endif()

# The Python with torch (and timm, for the tests): the setup script's venv, else python3.
find_program(VIT_PYTHON NAMES python3 HINTS $ENV{HOME}/.cache/vitrain/venv/bin NO_DEFAULT_PATH)
if(NOT VIT_PYTHON)
  find_program(VIT_PYTHON python3)
endif()

# LibTorch. Without an explicit prefix, ask the Python that holds torch where it lives.
if(NOT Torch_DIR AND NOT CMAKE_PREFIX_PATH)
  execute_process(COMMAND ${VIT_PYTHON} -c "import torch; print(torch.utils.cmake_prefix_path)"
                  OUTPUT_VARIABLE VIT_TORCH_PREFIX OUTPUT_STRIP_TRAILING_WHITESPACE
                  RESULT_VARIABLE VIT_TORCH_RC ERROR_QUIET)
  if(VIT_TORCH_RC EQUAL 0)
    list(APPEND CMAKE_PREFIX_PATH ${VIT_TORCH_PREFIX})
  endif()
endif()

# The torch wheel is built with CUDA; its CMake config wants a CUDA toolkit. Tell it where.
if(VIT_WITH_CUDA AND NOT CUDAToolkit_ROOT AND EXISTS /usr/local/cuda/bin/nvcc)
  set(CUDAToolkit_ROOT /usr/local/cuda)
endif()
# Torch's CMake files take TORCH_CUDA_ARCH_LIST and warn about any CMAKE_CUDA_ARCHITECTURES they
# see (then switch it off), so ours (for our own .cu files) is set after them.
set(TORCH_CUDA_ARCH_LIST "9.0" CACHE STRING "")
# (Their enable_language(CUDA) would define it from nvcc's default under policy CMP0104: OLD there.)
set(VIT_CUDA_ARCHITECTURES ${CMAKE_CUDA_ARCHITECTURES})
unset(CMAKE_CUDA_ARCHITECTURES)
unset(CMAKE_CUDA_ARCHITECTURES CACHE)
# The wheel's TorchConfig looks for a separate kineto library, which the wheel links into
# libtorch_cpu instead, and warns on every run; libc10 (linked anyway) answers that look-up.
set(torch_lib_candidates ${Torch_DIR}/../../../lib)
foreach(prefix ${VIT_TORCH_PREFIX} ${CMAKE_PREFIX_PATH})  # torch.utils.cmake_prefix_path: torch/share/cmake
  list(APPEND torch_lib_candidates ${prefix}/../../lib)
endforeach()
foreach(torch_lib ${torch_lib_candidates})
  if(NOT kineto_LIBRARY AND EXISTS ${torch_lib}/libc10.so)
    get_filename_component(torch_lib ${torch_lib}/libc10.so ABSOLUTE)
    set(kineto_LIBRARY ${torch_lib} CACHE FILEPATH "kineto is inside libtorch_cpu (torch wheel)" FORCE)
  endif()
endforeach()
cmake_policy(PUSH)
cmake_policy(SET CMP0104 OLD)
find_package(Torch REQUIRED)
cmake_policy(POP)
if(VIT_CUDA_ARCHITECTURES)
  set(CMAKE_CUDA_ARCHITECTURES ${VIT_CUDA_ARCHITECTURES})
else()
  set(CMAKE_CUDA_ARCHITECTURES 90)
endif()
add_library(vit_torch INTERFACE)
target_link_libraries(vit_torch INTERFACE ${TORCH_LIBRARIES})
target_include_directories(vit_torch SYSTEM INTERFACE ${TORCH_INCLUDE_DIRS})
add_library(vit::torch ALIAS vit_torch)

# CUDA + NCCL: compiled in only when the toolkit and NCCL are there.
set(VIT_HAVE_CUDA OFF)
if(VIT_WITH_CUDA)
  find_package(CUDAToolkit QUIET)
  find_path(VIT_NCCL_INCLUDE nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS} /usr/include /usr/local/cuda/include)
  find_library(VIT_NCCL_LIB nccl HINTS ${CUDAToolkit_LIBRARY_DIR} /usr/lib/x86_64-linux-gnu /usr/local/cuda/lib64)
  if(CUDAToolkit_FOUND AND VIT_NCCL_INCLUDE AND VIT_NCCL_LIB AND TARGET torch_cuda)
    set(VIT_HAVE_CUDA ON)
    add_library(vit_nccl INTERFACE)
    target_include_directories(vit_nccl SYSTEM INTERFACE ${VIT_NCCL_INCLUDE})
    target_link_libraries(vit_nccl INTERFACE ${VIT_NCCL_LIB} CUDA::cudart)
    add_library(vit::nccl ALIAS vit_nccl)
  endif()
endif()
message(STATUS "vitrain: CUDA + NCCL paths ${VIT_HAVE_CUDA}")

# nvJPEG (GPU JPEG decode, data/gpu_decode.h): the header from PyPI's nvidia-nvjpeg wheel in the
# setup script's venv, else the CUDA toolkit. The library is opened at run time (dlopen), first
# where it was found here; a build without the header decodes on the CPU and says so.
set(VIT_HAVE_NVJPEG OFF)
if(VIT_HAVE_CUDA)
  get_filename_component(VIT_PYTHON_BIN ${VIT_PYTHON} DIRECTORY)
  file(GLOB VIT_WHEEL_CUDA ${VIT_PYTHON_BIN}/../lib/python3*/site-packages/nvidia/cu13)
  find_path(VIT_NVJPEG_INCLUDE nvjpeg.h HINTS ${VIT_WHEEL_CUDA}/include ${CUDAToolkit_INCLUDE_DIRS})
  find_library(VIT_NVJPEG_LIB NAMES libnvjpeg.so.13 nvjpeg HINTS ${VIT_WHEEL_CUDA}/lib ${CUDAToolkit_LIBRARY_DIR})
  if(VIT_NVJPEG_INCLUDE)
    set(VIT_HAVE_NVJPEG ON)
  endif()
endif()
message(STATUS "vitrain: nvJPEG (GPU JPEG decode) ${VIT_HAVE_NVJPEG} ${VIT_NVJPEG_LIB}")

find_package(MPI REQUIRED COMPONENTS CXX)

find_package(yaml-cpp REQUIRED)
add_library(vit_yaml INTERFACE)
if(TARGET yaml-cpp::yaml-cpp)
  target_link_libraries(vit_yaml INTERFACE yaml-cpp::yaml-cpp)
else()
  target_link_libraries(vit_yaml INTERFACE yaml-cpp)
endif()
add_library(vit::yaml ALIAS vit_yaml)

find_package(Boost REQUIRED COMPONENTS program_options)
find_package(JPEG REQUIRED)
find_package(OpenSSL REQUIRED COMPONENTS Crypto)  # SHA-256 of checkpoint files (core/files.cpp)
find_package(nlohmann_json 3.10 REQUIRED)          # JSON files (core/json.h), header only
# NumPy .npz archives (model/npz.cpp). Through pkg-config: Debian 12's libzip CMake files name
# tools (zipcmp) that only another package installs.
find_package(PkgConfig REQUIRED)
pkg_check_modules(VIT_LIBZIP REQUIRED IMPORTED_TARGET libzip)
find_package(Threads REQUIRED)
