"""Install the ``visionllm`` package and the compiled ops of ``custom_ops``.

Every folder ``custom_ops/<op>/csrc`` becomes the extension ``custom_ops.<op>._C`` built from its
``*.cpp`` and ``cpu/*.cpp`` files. With ``FORCE_CUDA=1`` (and ``CUDA_HOME`` naming the toolkit
root) the ``cuda/*.cu`` kernels are compiled in as well and ``WITH_CUDA`` is defined.
Build without isolation so the extension compiles against the installed torch:
``pip install --no-build-isolation -e .``
"""
import glob
import os

from setuptools import find_packages, setup


def op_extensions():
    if os.environ.get("VISIONLLM_SKIP_OPS") == "1":
        # `make env` installs the package first and lets `make ops` build the kernels in place
        # once (incrementally afterwards), instead of compiling them twice.
        return []
    from torch.utils.cpp_extension import CppExtension, CUDAExtension

    with_cuda = os.environ.get("FORCE_CUDA", "0") == "1"
    extensions = []
    for csrc in sorted(glob.glob(os.path.join("custom_ops", "*", "csrc"))):
        op = os.path.basename(os.path.dirname(csrc))
        sources = sorted(glob.glob(os.path.join(csrc, "*.cpp")) + glob.glob(os.path.join(csrc, "cpu", "*.cpp")))
        headers = sorted(glob.glob(os.path.join(csrc, "**", "*.h"), recursive=True))
        if not sources:
            continue
        extra = {"cxx": ["-O3", "-fopenmp", "-std=c++20"]}
        kwargs = dict(
            name=f"custom_ops.{op}._C",
            sources=sources,
            depends=headers,
            include_dirs=[os.path.abspath(csrc)],
            extra_link_args=["-fopenmp"],
        )
        if with_cuda:
            sources += sorted(glob.glob(os.path.join(csrc, "cuda", "*.cu")))
            extra["nvcc"] = ["-O3", "-std=c++20", "--expt-relaxed-constexpr"]
            extensions.append(CUDAExtension(define_macros=[("WITH_CUDA", None)], extra_compile_args=extra, **kwargs))
        else:
            extensions.append(CppExtension(extra_compile_args=extra, **kwargs))
    return extensions


def build_ext_class():
    if os.environ.get("VISIONLLM_SKIP_OPS") == "1":
        from setuptools.command.build_ext import build_ext

        return build_ext
    from torch.utils.cpp_extension import BuildExtension

    return BuildExtension.with_options(use_ninja=True)


setup(
    name="visionllm",
    version="0.1.0",
    description="VisionLLM: vision-centric generalist models with an LLM task decoder (CPU-first)",
    python_requires=">=3.10",
    packages=find_packages(include=["visionllm", "visionllm.*", "custom_ops", "custom_ops.*"]),
    ext_modules=op_extensions(),
    cmdclass={"build_ext": build_ext_class()},
    zip_safe=False,
)
