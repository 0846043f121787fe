"""
Build hook: compile the optional C accelerator ``resilience._speedups`` when it can.

hatchling builds the package; this hook asks setuptools' ``build_ext`` to compile the one
extension module: into the source tree for an editable install (which imports from there),
into ``build/`` for a wheel, which ships it tagged for the interpreter. Without a C compiler, with a failing compile, or with
``RESILIENCE_NO_EXTENSIONS=1`` set, it warns and the package stays pure Python: the
extension is an accelerator, never a requirement.
"""

from __future__ import annotations

import os
import pathlib
import sys
import sysconfig

from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


SOURCE = "resilience/_speedups.c"
MODULE = "resilience._speedups"


class CustomBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    """Compile ``resilience/_speedups.c`` in place; ship it, or fall back to pure Python."""

    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel":
            return
        editable = version == "editable"
        if os.environ.get("RESILIENCE_NO_EXTENSIONS"):
            self._drop_stale(editable=editable)
            return
        try:
            built = self._compile(inplace=editable)
        except Exception as exc:  # no compiler, no headers: stay pure Python
            print(
                f"resilience: the C accelerator was not built ({type(exc).__name__}: {exc}); "
                "using the pure-Python deadline",
                file=sys.stderr,
            )
            self._drop_stale(editable=editable)
            return
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
        if not editable:
            build_data["force_include"][str(built)] = f"resilience/{built.name}"

    def _target(self, base: pathlib.Path) -> pathlib.Path:
        suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
        return base / "resilience" / f"_speedups{suffix}"

    def _drop_stale(self, *, editable: bool) -> None:
        """An editable install: forget a module built in place earlier (pure Python it is)."""
        if editable:
            self._target(pathlib.Path(self.root)).unlink(missing_ok=True)

    def _compile(self, *, inplace: bool) -> pathlib.Path:
        from setuptools import Distribution, Extension  # noqa: PLC0415 - only when building
        from setuptools.command.build_ext import build_ext  # noqa: PLC0415

        extension = Extension(MODULE, sources=[SOURCE], optional=False)
        distribution = Distribution({"name": "resilience", "ext_modules": [extension]})
        command = build_ext(distribution)
        build = pathlib.Path(self.root, "build")
        command.inplace = inplace
        command.build_temp = str(build / "temp")
        command.build_lib = str(build / "lib")
        command.ensure_finalized()
        old = os.getcwd()
        os.chdir(self.root)
        try:
            command.run()
        finally:
            os.chdir(old)
        target = self._target(pathlib.Path(self.root) if inplace else build / "lib")
        if not target.is_file():
            msg = f"build_ext did not produce {target.name}"
            raise FileNotFoundError(msg)
        return target
