// Python binding of multi-scale deformable attention: input checks and CPU / CUDA dispatch.
#include <torch/extension.h>

#include <string>
#include <vector>

#include "ms_deform_attn.h"

namespace {

// Python spelling of a dtype, e.g. torch.bfloat16.
std::string dtype_name(at::ScalarType type) { return "torch." + std::string(c10::getDtypeNames(type).first); }

// The floating dtypes the kernels serve (computing in float32 for the two 16-bit ones); anything
// else is a TypeError naming the argument.
void check_float_dtype(const at::Tensor& t, const char* name) {
  const auto type = t.scalar_type();
  TORCH_CHECK_TYPE(type == at::kHalf || type == at::kBFloat16 || type == at::kFloat || type == at::kDouble,
                   "ms_deform_attn: ", name, " has dtype ", dtype_name(type),
                   "; expected torch.float16, torch.bfloat16, torch.float32 or torch.float64");
}

void check_tensor(const at::Tensor& t, const char* name, int64_t dim) {
  TORCH_CHECK(t.defined(), "ms_deform_attn: ", name, " is undefined");
  TORCH_CHECK(t.dim() == dim, "ms_deform_attn: ", name, " must have ", dim, " dimensions, got shape ", t.sizes());
  TORCH_CHECK(t.is_contiguous(), "ms_deform_attn: ", name, " must be contiguous (call .contiguous() first)");
}

// Checks everything the kernels rely on; returns nothing, raises a RuntimeError with a clear message.
void check_inputs(const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
                  const at::Tensor& sampling_locations, const at::Tensor& attention_weights) {
  check_tensor(value, "value [B, S, H, D]", 4);
  check_tensor(spatial_shapes, "spatial_shapes [L, 2]", 2);
  check_tensor(level_start_index, "level_start_index [L]", 1);
  check_tensor(sampling_locations, "sampling_locations [B, Q, H, L, P, 2]", 6);
  check_tensor(attention_weights, "attention_weights [B, Q, H, L, P]", 5);

  check_float_dtype(value, "value");
  check_float_dtype(sampling_locations, "sampling_locations");
  check_float_dtype(attention_weights, "attention_weights");
  for (const auto* t : {&sampling_locations, &attention_weights}) {
    TORCH_CHECK_TYPE(t->scalar_type() == value.scalar_type(), "ms_deform_attn: ",
                     t == &sampling_locations ? "sampling_locations" : "attention_weights", " has dtype ",
                     dtype_name(t->scalar_type()), " but value has ", dtype_name(value.scalar_type()),
                     "; value, sampling_locations and attention_weights must share one dtype");
  }
  TORCH_CHECK(spatial_shapes.scalar_type() == at::kLong && level_start_index.scalar_type() == at::kLong,
              "ms_deform_attn: spatial_shapes and level_start_index must be int64 (long), got ",
              spatial_shapes.scalar_type(), " and ", level_start_index.scalar_type());

  const auto device = value.device();
  for (const auto* t : {&spatial_shapes, &level_start_index, &sampling_locations, &attention_weights}) {
    TORCH_CHECK(t->device() == device, "ms_deform_attn: all inputs must be on one device, value is on ", device,
                " but another input is on ", t->device());
  }

  const int64_t B = value.size(0), S = value.size(1), H = value.size(2);
  const int64_t L = sampling_locations.size(3);
  TORCH_CHECK(spatial_shapes.size(1) == 2, "ms_deform_attn: spatial_shapes must be [L, 2] (height, width), got ",
              spatial_shapes.sizes());
  TORCH_CHECK(spatial_shapes.size(0) == L && level_start_index.size(0) == L,
              "ms_deform_attn: sampling_locations has ", L, " levels but spatial_shapes is ", spatial_shapes.sizes(),
              " and level_start_index is ", level_start_index.sizes());
  TORCH_CHECK(sampling_locations.size(0) == B && sampling_locations.size(2) == H && sampling_locations.size(5) == 2,
              "ms_deform_attn: sampling_locations must be [B, Q, H, L, P, 2] = [", B, ", Q, ", H,
              ", L, P, 2] for value ", value.sizes(), ", got ", sampling_locations.sizes());
  TORCH_CHECK(attention_weights.sizes() == sampling_locations.sizes().slice(0, 5),
              "ms_deform_attn: attention_weights must be [B, Q, H, L, P] = ", sampling_locations.sizes().slice(0, 5),
              ", got ", attention_weights.sizes());

  // The level table decides which memory the kernels read: validate it where this is cheap.
  if (device.is_cpu()) {
    const int64_t* shapes = spatial_shapes.data_ptr<int64_t>();
    const int64_t* starts = level_start_index.data_ptr<int64_t>();
    for (int64_t l = 0; l < L; ++l) {
      TORCH_CHECK(shapes[2 * l] > 0 && shapes[2 * l + 1] > 0, "ms_deform_attn: level ", l,
                  " has a non-positive spatial shape (", shapes[2 * l], ", ", shapes[2 * l + 1], ")");
      TORCH_CHECK(starts[l] >= 0 && starts[l] + shapes[2 * l] * shapes[2 * l + 1] <= S, "ms_deform_attn: level ", l,
                  " (start ", starts[l], ", shape ", shapes[2 * l], "x", shapes[2 * l + 1],
                  ") does not fit in value with S = ", S, " positions");
    }
  }
}

at::Tensor forward(const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
                   const at::Tensor& sampling_locations, const at::Tensor& attention_weights) {
  check_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  if (value.is_cuda()) {
#ifdef WITH_CUDA
    return ms_deform_attn_cuda_forward(value, spatial_shapes, level_start_index, sampling_locations,
                                       attention_weights);
#else
    TORCH_CHECK(false, "ms_deform_attn: this build has no CUDA kernel (rebuild with FORCE_CUDA=1)");
#endif
  }
  TORCH_CHECK(value.is_cpu(), "ms_deform_attn: unsupported device ", value.device());
  return ms_deform_attn_cpu_forward(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
}

std::vector<at::Tensor> backward(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                 const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                                 const at::Tensor& attention_weights, const at::Tensor& grad_output) {
  check_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  check_tensor(grad_output, "grad_output [B, Q, H*D]", 3);
  TORCH_CHECK_TYPE(grad_output.scalar_type() == value.scalar_type(), "ms_deform_attn: grad_output has dtype ",
                   dtype_name(grad_output.scalar_type()), " but value has ", dtype_name(value.scalar_type()));
  TORCH_CHECK(grad_output.device() == value.device(), "ms_deform_attn: grad_output is on ", grad_output.device(),
              " but value is on ", value.device());
  TORCH_CHECK(grad_output.size(0) == value.size(0) && grad_output.size(1) == sampling_locations.size(1) &&
                  grad_output.size(2) == value.size(2) * value.size(3),
              "ms_deform_attn: grad_output must be [B, Q, H*D], got ", grad_output.sizes());
  if (value.is_cuda()) {
#ifdef WITH_CUDA
    return ms_deform_attn_cuda_backward(value, spatial_shapes, level_start_index, sampling_locations,
                                        attention_weights, grad_output);
#else
    TORCH_CHECK(false, "ms_deform_attn: this build has no CUDA kernel (rebuild with FORCE_CUDA=1)");
#endif
  }
  TORCH_CHECK(value.is_cpu(), "ms_deform_attn: unsupported device ", value.device());
  return ms_deform_attn_cpu_backward(value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
                                     grad_output);
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "Multi-scale deformable attention in float16/bfloat16/float32/float64 (CPU kernel; CUDA kernel when built "
            "with FORCE_CUDA=1)";
  m.def("forward", &forward, "ms_deform_attn forward -> output [B, Q, H*D]", py::arg("value"),
        py::arg("spatial_shapes"), py::arg("level_start_index"), py::arg("sampling_locations"),
        py::arg("attention_weights"));
  m.def("backward", &backward,
        "ms_deform_attn backward -> (grad_value, grad_sampling_locations, grad_attention_weights)", py::arg("value"),
        py::arg("spatial_shapes"), py::arg("level_start_index"), py::arg("sampling_locations"),
        py::arg("attention_weights"), py::arg("grad_output"));
#ifdef WITH_CUDA
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
}
