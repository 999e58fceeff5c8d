// Python binding of DCNv3: argument checks with clear messages, then CPU / CUDA dispatch.
#include <torch/extension.h>

#include "dcnv3.h"

#include <string>
#include <vector>

namespace {

// Python spelling of a dtype, e.g. torch.bfloat16.
std::string dtype_name(at::ScalarType type) { return "torch." + std::string(c10::getDtypeNames(type).first); }

void check_tensor(const at::Tensor& t, const char* name, const at::Tensor& like) {
  TORCH_CHECK(t.dim() == 4, "dcnv3: ", name, " must be 4-D (NHWC), got shape ", t.sizes());
  // The kernels serve these four (computing in float32 for the two 16-bit ones).
  const auto type = t.scalar_type();
  TORCH_CHECK_TYPE(type == at::kHalf || type == at::kBFloat16 || type == at::kFloat || type == at::kDouble,
                   "dcnv3: ", name, " has dtype ", dtype_name(type),
                   "; expected torch.float16, torch.bfloat16, torch.float32 or torch.float64");
  TORCH_CHECK_TYPE(type == like.scalar_type(), "dcnv3: ", name, " has dtype ", dtype_name(type), " but input has ",
                   dtype_name(like.scalar_type()), "; input, offset and mask must share one dtype");
  TORCH_CHECK(t.device() == like.device(), "dcnv3: ", name, " is on ", t.device(), " but input is on ",
              like.device());
  TORCH_CHECK(t.is_contiguous(), "dcnv3: ", name, " must be contiguous (call .contiguous())");
}

dcnv3::Geometry check_arguments(const at::Tensor& input, const at::Tensor& offset, const at::Tensor& mask,
                                int64_t kernel_h, int64_t kernel_w, int64_t stride_h, int64_t stride_w,
                                int64_t pad_h, int64_t pad_w, int64_t dilation_h, int64_t dilation_w,
                                int64_t group, int64_t group_channels) {
  check_tensor(input, "input", input);
  check_tensor(offset, "offset", input);
  check_tensor(mask, "mask", input);
  TORCH_CHECK(kernel_h > 0 && kernel_w > 0, "dcnv3: kernel size must be positive, got ", kernel_h, "x", kernel_w);
  TORCH_CHECK(stride_h > 0 && stride_w > 0, "dcnv3: stride must be positive, got ", stride_h, "x", stride_w);
  TORCH_CHECK(dilation_h > 0 && dilation_w > 0, "dcnv3: dilation must be positive");
  TORCH_CHECK(pad_h >= 0 && pad_w >= 0, "dcnv3: padding must be non-negative");
  TORCH_CHECK(group > 0 && group_channels > 0, "dcnv3: group and group_channels must be positive");

  dcnv3::Geometry geo;
  geo.batch = input.size(0);
  geo.height_in = input.size(1);
  geo.width_in = input.size(2);
  geo.group = group;
  geo.group_channels = group_channels;
  geo.kernel_h = kernel_h;
  geo.kernel_w = kernel_w;
  geo.stride_h = stride_h;
  geo.stride_w = stride_w;
  geo.pad_h = pad_h;
  geo.pad_w = pad_w;
  geo.dilation_h = dilation_h;
  geo.dilation_w = dilation_w;
  geo.height_out = dcnv3::output_size(geo.height_in, kernel_h, stride_h, pad_h, dilation_h);
  geo.width_out = dcnv3::output_size(geo.width_in, kernel_w, stride_w, pad_w, dilation_w);

  TORCH_CHECK(input.size(3) == group * group_channels, "dcnv3: input has ", input.size(3),
              " channels but group * group_channels = ", group, " * ", group_channels);
  TORCH_CHECK(geo.height_out > 0 && geo.width_out > 0, "dcnv3: input ", geo.height_in, "x", geo.width_in,
              " is too small for the kernel (output would be ", geo.height_out, "x", geo.width_out, ")");
  const std::vector<int64_t> offset_shape{geo.batch, geo.height_out, geo.width_out, group * geo.points() * 2};
  const std::vector<int64_t> mask_shape{geo.batch, geo.height_out, geo.width_out, group * geo.points()};
  TORCH_CHECK(offset.sizes() == at::IntArrayRef(offset_shape), "dcnv3: offset must have shape ",
              at::IntArrayRef(offset_shape), " (N, Ho, Wo, group*Kh*Kw*2), got ", offset.sizes());
  TORCH_CHECK(mask.sizes() == at::IntArrayRef(mask_shape), "dcnv3: mask must have shape ",
              at::IntArrayRef(mask_shape), " (N, Ho, Wo, group*Kh*Kw), got ", mask.sizes());
  return geo;
}

at::Tensor forward(const at::Tensor& input, const at::Tensor& offset, const at::Tensor& mask, int64_t kernel_h,
                   int64_t kernel_w, int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w,
                   int64_t dilation_h, int64_t dilation_w, int64_t group, int64_t group_channels,
                   double offset_scale) {
  const auto geo = check_arguments(input, offset, mask, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w,
                                   dilation_h, dilation_w, group, group_channels);
  if (input.is_cuda()) {
#ifdef WITH_CUDA
    return dcnv3_forward_cuda(input, offset, mask, geo, offset_scale);
#else
    TORCH_CHECK(false, "dcnv3: this build has no CUDA kernel (rebuild with FORCE_CUDA=1)");
#endif
  }
  TORCH_CHECK(input.device().is_cpu(), "dcnv3: unsupported device ", input.device());
  return dcnv3_forward_cpu(input, offset, mask, geo, offset_scale);
}

std::vector<at::Tensor> backward(const at::Tensor& input, const at::Tensor& offset, const at::Tensor& mask,
                                 const at::Tensor& grad_output, int64_t kernel_h, int64_t kernel_w,
                                 int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w,
                                 int64_t dilation_h, int64_t dilation_w, int64_t group, int64_t group_channels,
                                 double offset_scale) {
  const auto geo = check_arguments(input, offset, mask, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w,
                                   dilation_h, dilation_w, group, group_channels);
  check_tensor(grad_output, "grad_output", input);
  TORCH_CHECK(grad_output.size(0) == geo.batch && grad_output.size(1) == geo.height_out &&
                  grad_output.size(2) == geo.width_out && grad_output.size(3) == geo.channels(),
              "dcnv3: grad_output has shape ", grad_output.sizes(), ", expected the output shape");
  if (input.is_cuda()) {
#ifdef WITH_CUDA
    return dcnv3_backward_cuda(input, offset, mask, grad_output, geo, offset_scale);
#else
    TORCH_CHECK(false, "dcnv3: this build has no CUDA kernel (rebuild with FORCE_CUDA=1)");
#endif
  }
  TORCH_CHECK(input.device().is_cpu(), "dcnv3: unsupported device ", input.device());
  return dcnv3_backward_cpu(input, offset, mask, grad_output, geo, offset_scale);
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "InternImage DCNv3 operator in float16/bfloat16/float32/float64 (CPU kernel, CUDA kernel when built "
            "with WITH_CUDA)";
#ifdef WITH_CUDA
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
  m.def("forward", &forward, "DCNv3 forward", py::arg("input"), py::arg("offset"), py::arg("mask"),
        py::arg("kernel_h"), py::arg("kernel_w"), py::arg("stride_h"), py::arg("stride_w"), py::arg("pad_h"),
        py::arg("pad_w"), py::arg("dilation_h"), py::arg("dilation_w"), py::arg("group"),
        py::arg("group_channels"), py::arg("offset_scale"));
  m.def("backward", &backward, "DCNv3 backward: (grad_input, grad_offset, grad_mask)", py::arg("input"),
        py::arg("offset"), py::arg("mask"), py::arg("grad_output"), py::arg("kernel_h"), py::arg("kernel_w"),
        py::arg("stride_h"), py::arg("stride_w"), py::arg("pad_h"), py::arg("pad_w"), py::arg("dilation_h"),
        py::arg("dilation_w"), py::arg("group"), py::arg("group_channels"), py::arg("offset_scale"));
}
