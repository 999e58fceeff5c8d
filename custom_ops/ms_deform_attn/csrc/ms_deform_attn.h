// Declarations of the device-specific kernels of multi-scale deformable attention.
// Floating tensors share one dtype: float16, bfloat16, float32 or float64 (computed in float32 for
// the 16-bit types; outputs and gradients come back in the inputs' dtype).
// Shapes (all tensors contiguous, already checked by the binding in ms_deform_attn.cpp):
//   value               [B, S, H, D]        levels concatenated along S
//   spatial_shapes      [L, 2]  int64       (height, width) of each level
//   level_start_index   [L]     int64       offset of each level along S
//   sampling_locations  [B, Q, H, L, P, 2]  (x, y) in [0, 1] over the padded map
//   attention_weights   [B, Q, H, L, P]
//   output              [B, Q, H * D]
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

at::Tensor ms_deform_attn_cpu_forward(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                      const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                                      const at::Tensor& attention_weights);

// Returns {grad_value, grad_sampling_locations, grad_attention_weights}.
std::vector<at::Tensor> ms_deform_attn_cpu_backward(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                                    const at::Tensor& level_start_index,
                                                    const at::Tensor& sampling_locations,
                                                    const at::Tensor& attention_weights,
                                                    const at::Tensor& grad_output);

#ifdef WITH_CUDA
at::Tensor ms_deform_attn_cuda_forward(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                       const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                                       const at::Tensor& attention_weights);

std::vector<at::Tensor> ms_deform_attn_cuda_backward(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                                     const at::Tensor& level_start_index,
                                                     const at::Tensor& sampling_locations,
                                                     const at::Tensor& attention_weights,
                                                     const at::Tensor& grad_output);
#endif
