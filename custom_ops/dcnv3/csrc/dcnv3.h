// Declarations of the DCNv3 kernels; the binding (dcnv3.cpp) checks arguments and dispatches.
#pragma once

#include <ATen/ATen.h>

#include <vector>

#include "dcnv3_math.h"

// All tensors are contiguous and share one dtype (float16, bfloat16, float32 or float64; computed in
// float32 for the 16-bit types), shapes already checked against `geo`. Results come back in that dtype.
at::Tensor dcnv3_forward_cpu(const at::Tensor& input, const at::Tensor& offset, const at::Tensor& mask,
                             const dcnv3::Geometry& geo, double offset_scale);
// Returns {grad_input, grad_offset, grad_mask}.
std::vector<at::Tensor> dcnv3_backward_cpu(const at::Tensor& input, const at::Tensor& offset,
                                           const at::Tensor& mask, const at::Tensor& grad_output,
                                           const dcnv3::Geometry& geo, double offset_scale);

#ifdef WITH_CUDA
at::Tensor dcnv3_forward_cuda(const at::Tensor& input, const at::Tensor& offset, const at::Tensor& mask,
                              const dcnv3::Geometry& geo, double offset_scale);
std::vector<at::Tensor> dcnv3_backward_cuda(const at::Tensor& input, const at::Tensor& offset,
                                            const at::Tensor& mask, const at::Tensor& grad_output,
                                            const dcnv3::Geometry& geo, double offset_scale);
#endif
