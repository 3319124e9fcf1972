# vit_library(NAME SOURCES ... DEPS ...): one static library per folder, warnings on for our code,
# the LibTorch precompiled header shared by every target that uses torch.

set(VIT_WARNINGS -Wall -Wextra -Wno-unused-parameter)

# One precompiled header target; others reuse it (REUSE_FROM) so it is compiled once.
add_library(vit_pch STATIC ${PROJECT_SOURCE_DIR}/cmake/pch.cpp)
target_link_libraries(vit_pch PUBLIC vit::torch)
if(VIT_USE_PCH)
  target_precompile_headers(vit_pch PRIVATE <torch/torch.h> <vector> <string> <memory>)
endif()

function(vit_use_pch target)
  if(VIT_USE_PCH)
    target_precompile_headers(${target} REUSE_FROM vit_pch)
  endif()
endfunction()

function(vit_library name)
  cmake_parse_arguments(ARG "" "" "SOURCES;PUBLIC_DEPS;PRIVATE_DEPS" ${ARGN})
  add_library(${name} STATIC ${ARG_SOURCES})
  target_include_directories(${name} PUBLIC ${PROJECT_SOURCE_DIR})
  target_link_libraries(${name} PUBLIC ${ARG_PUBLIC_DEPS} PRIVATE ${ARG_PRIVATE_DEPS})
  target_compile_options(${name} PRIVATE ${VIT_WARNINGS})
  vit_use_pch(${name})
endfunction()
