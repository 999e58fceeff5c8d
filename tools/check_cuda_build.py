"""Compile every CUDA kernel of ``custom_ops/*/csrc`` with the machine's nvcc.

No GPU is needed (nor used): this proves that the ``cuda/*.cu`` kernels, the shared
``__host__ __device__`` math headers and the ``WITH_CUDA`` branches of the bindings compile and
link against the installed CUDA build of torch. Each op is built the way ``setup.py`` builds it
with ``FORCE_CUDA=1`` (``csrc/*.cpp`` + ``csrc/cpu/*.cpp`` + ``csrc/cuda/*.cu``, ``-DWITH_CUDA``),
through ``torch.utils.cpp_extension.load`` into a temporary directory, then imported so missing
symbols show up as well.

Exit status: 0 when every op compiled, or when there is no nvcc (a skip, with the reason printed);
1 when an op failed to compile or has no CUDA kernel. Slow (minutes per op on a busy machine), so
it is run by ``make check-cuda``, not by pytest.

    python tools/check_cuda_build.py [--ops ms_deform_attn dcnv3] [--arch 7.5] [--keep]
"""
import argparse
import glob
import os
import shutil
import sys
import tempfile
import time
import traceback

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The oldest architecture CUDA 13 supports: code that compiles for it uses no newer intrinsics.
DEFAULT_ARCH = "7.5"


def find_nvcc():
    """Path of nvcc, or None: PATH first, then the usual toolkit locations."""
    candidates = [shutil.which("nvcc")]
    if os.environ.get("CUDA_HOME"):
        candidates.append(os.path.join(os.environ["CUDA_HOME"], "bin", "nvcc"))
    candidates += sorted(glob.glob("/usr/local/cuda*/bin/nvcc"), reverse=True)
    for path in candidates:
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def _is_toolkit_root(path):
    return (os.path.isfile(os.path.join(path, "lib64", "libcudart.so"))
            and os.path.isfile(os.path.join(path, "include", "cuda_runtime.h")))


def find_cuda_home(nvcc):
    """The toolkit root holding ``lib64/libcudart.so``. torch would otherwise guess nvcc's parent
    folder, which on some installs (e.g. /usr/local/bin/nvcc) has no libraries, and linking fails
    on -lcudart."""
    candidates = []
    if os.environ.get("CUDA_HOME"):
        candidates.append(os.environ["CUDA_HOME"])
    real_nvcc = os.path.realpath(nvcc)
    candidates += [os.path.dirname(os.path.dirname(real_nvcc)), os.path.dirname(os.path.dirname(nvcc))]
    candidates += sorted(glob.glob("/usr/local/cuda*"), reverse=True)
    # pip-installed toolkits (nvidia-* wheels next to torch) as a last resort.
    candidates += sorted(glob.glob(os.path.join(sys.prefix, "lib", "python3*", "site-packages", "nvidia", "cu*")))
    for path in candidates:
        if path and _is_toolkit_root(os.path.realpath(path)):
            return os.path.realpath(path)
    return None


def pip_cuda_include_dirs():
    """Include folders of the nvidia-* wheels installed next to torch (e.g. nvidia/cu13/include)."""
    pattern = os.path.join(sys.prefix, "lib", "python3*", "site-packages", "nvidia", "*", "include")
    return sorted(d for d in glob.glob(pattern) if os.path.isdir(d))


def op_folders(selected):
    folders = {}
    for csrc in sorted(glob.glob(os.path.join(REPO, "custom_ops", "*", "csrc"))):
        folders[os.path.basename(os.path.dirname(csrc))] = csrc
    if selected:
        unknown = sorted(set(selected) - set(folders))
        if unknown:
            raise SystemExit(f"unknown op(s) {unknown}; available: {sorted(folders)}")
        folders = {name: folders[name] for name in selected}
    return folders


def build_op(name, csrc, build_root, verbose):
    """Compile one op with CUDA; returns an error message or None."""
    from torch.utils.cpp_extension import load

    cuda_sources = sorted(glob.glob(os.path.join(csrc, "cuda", "*.cu")))
    if not cuda_sources:
        return f"no CUDA kernel: {os.path.relpath(csrc, REPO)}/cuda/*.cu is empty"
    sources = sorted(glob.glob(os.path.join(csrc, "*.cpp")) + glob.glob(os.path.join(csrc, "cpu", "*.cpp")))
    build_dir = os.path.join(build_root, name)
    os.makedirs(build_dir, exist_ok=True)
    # A minimal toolkit may lack library headers (cusparse.h, cublas_v2.h) that some torch CUDA
    # headers include; the nvidia wheels next to torch ship them. They are searched only
    # after the toolkit's own include folder (these flags come after torch's -isystem flags, and
    # -isystem folders are searched in order), so the toolkit's headers always win.
    fallback = [flag for d in pip_cuda_include_dirs() for flag in ("-isystem", d)]
    module = load(
        name=f"{name}_cuda_check",
        sources=sources + cuda_sources,
        extra_include_paths=[csrc],
        extra_cflags=["-O3", "-fopenmp", "-DWITH_CUDA"] + fallback,
        extra_cuda_cflags=["-O3", "--expt-relaxed-constexpr", "-DWITH_CUDA"] + fallback,
        extra_ldflags=["-fopenmp"],
        build_directory=build_dir,
        with_cuda=True,
        verbose=verbose,
    )
    if not getattr(module, "with_cuda", True):
        return "built, but the binding reports with_cuda=False (WITH_CUDA branch not compiled)"
    return None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ops", nargs="*", help="op folders to check (default: every custom_ops/*/csrc)")
    parser.add_argument("--arch", default=os.environ.get("TORCH_CUDA_ARCH_LIST", DEFAULT_ARCH),
                        help="TORCH_CUDA_ARCH_LIST (default %(default)s); one arch keeps the build short")
    parser.add_argument("--keep", action="store_true", help="keep the temporary build directory")
    parser.add_argument("--verbose", action="store_true", help="show the compiler commands")
    args = parser.parse_args(argv)

    nvcc = find_nvcc()
    if nvcc is None:
        print("SKIP: no nvcc found (PATH, $CUDA_HOME/bin, /usr/local/cuda*/bin); CUDA kernels not checked")
        return 0
    cuda_home = find_cuda_home(nvcc)
    if cuda_home is None:
        print(f"FAIL: found {nvcc} but no CUDA toolkit root with lib64/libcudart.so and include/cuda_runtime.h; "
              "set CUDA_HOME to it")
        return 1
    os.environ["CUDA_HOME"] = cuda_home
    os.environ["PATH"] = os.path.join(cuda_home, "bin") + os.pathsep + os.environ.get("PATH", "")
    # With no GPU visible torch cannot pick an architecture itself, so one is always given.
    os.environ["TORCH_CUDA_ARCH_LIST"] = args.arch

    import torch

    if torch.version.cuda is None:
        print(f"SKIP: torch {torch.__version__} is a CPU-only build; CUDA extensions cannot be built against it")
        return 0
    print(f"nvcc {nvcc}, CUDA_HOME={cuda_home}, torch {torch.__version__} (CUDA {torch.version.cuda}), "
          f"arch {args.arch}, MAX_JOBS={os.environ.get('MAX_JOBS', 'default')}", flush=True)

    build_root = tempfile.mkdtemp(prefix="visionllm_cuda_check_")
    failures = {}
    try:
        for name, csrc in op_folders(args.ops).items():
            start = time.time()
            print(f"[{name}] compiling ...", flush=True)
            try:
                error = build_op(name, csrc, build_root, args.verbose)
            except Exception as err:  # compiler errors arrive as RuntimeError with the log printed above
                traceback.print_exc()
                error = f"{type(err).__name__}: {str(err).strip().splitlines()[-1] if str(err).strip() else err}"
            status = "OK" if error is None else f"FAIL ({error})"
            print(f"[{name}] {status} in {time.time() - start:.0f} s", flush=True)
            if error is not None:
                failures[name] = error
    finally:
        if args.keep:
            print(f"build directory kept: {build_root}")
        else:
            shutil.rmtree(build_root, ignore_errors=True)

    if failures:
        print(f"CUDA build check FAILED for: {', '.join(sorted(failures))}")
        return 1
    print("CUDA build check passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
