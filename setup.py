"""Build deepcomp's native module by driving CMakeLists.txt.

`pip install .` and `pip install -e .` both come through here. The CMake build tree is
kept in build/cmake so that rebuilding after editing one kernel recompiles one file.
"""
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


class CMakeExtension(Extension):
    def __init__(self, name: str) -> None:
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    def build_extension(self, ext: Extension) -> None:
        import pybind11

        target = Path(self.get_ext_fullpath(ext.name)).resolve()
        build_dir = ROOT / "build" / "cmake"
        build_dir.mkdir(parents=True, exist_ok=True)
        cfg = os.environ.get("DEEPCOMP_BUILD_TYPE", "Release")
        configure = [
            "cmake", "-S", str(ROOT), "-B", str(build_dir),
            f"-DCMAKE_BUILD_TYPE={cfg}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
            f"-DPython_EXECUTABLE={sys.executable}",
        ]
        if shutil.which("ninja") and not (build_dir / "Makefile").exists():
            configure += ["-G", "Ninja"]
        subprocess.run(configure, check=True)
        jobs = str(os.cpu_count() or 2)
        subprocess.run(["cmake", "--build", str(build_dir), "-j", jobs], check=True)

        built = next(p for p in build_dir.iterdir() if p.name.startswith("_C.") and p.suffix == ".so")
        target.parent.mkdir(parents=True, exist_ok=True)
        # Copy then rename: a process that has the old module mapped keeps a valid file.
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".C-", suffix=".so")
        os.close(fd)
        shutil.copyfile(built, tmp)
        os.chmod(tmp, 0o755)
        os.replace(tmp, target)


setup(ext_modules=[CMakeExtension("deepcomp._C")], cmdclass={"build_ext": CMakeBuild})
