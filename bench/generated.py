"""Generate the openapi-python-client client from the shared spec, at bench time, into a temp dir.

Nothing generated is kept in the repository: `generate(dest)` writes the package
`osvi_generated_client` under `dest`, and the driver points the client processes at it.

If the generator rejects the spec as it is, the spec is patched in a temporary copy and tried
once more: the 3.0 keyword `nullable: true` (which a 3.1 document should spell as a type list
with "null") is rewritten to the 3.1 form. Whether that was needed is part of the result.

Usage: python bench/generated.py [DEST]   (generates and prints what happened)
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Final

from clients import GENERATED_PACKAGE

SPEC: Final = Path(__file__).resolve().parents[2] / "shared" / "api" / "inject_context.openapi.yaml"
_NULLABLE: Final = re.compile(
    r"^(?P<indent>\s*)type: (?P<type>\w+)\n(?P<between>(?:(?P=indent)\w.*\n)*?)"
    r"(?P=indent)nullable: true\n",
    re.MULTILINE,
)


class GenerationError(RuntimeError):
    """The generator is missing or failed even on the patched spec."""


def _generator() -> str:
    beside_python = Path(sys.executable).parent / "openapi-python-client"
    found = shutil.which("openapi-python-client") or (
        str(beside_python) if beside_python.exists() else None
    )
    if found is None:
        raise GenerationError(
            "openapi-python-client is not installed (pip install openapi-python-client)"
        )
    return found


def patch_nullable(text: str) -> str:
    """`type: X` ... `nullable: true` (OpenAPI 3.0) -> `type: [X, "null"]` (OpenAPI 3.1)."""

    def rewrite(match: re.Match[str]) -> str:
        indent = match["indent"]
        return f'{indent}type: [{match["type"]}, "null"]\n{match["between"]}'

    return _NULLABLE.sub(rewrite, text)


def _run(generator: str, spec: Path, out: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    # The generator formats its output with ruff when it finds it on PATH.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run(
        [generator, "generate", "--path", str(spec), "--meta", "none", "--output-path", str(out)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )


def generate(dest: Path, spec: Path = SPEC) -> dict[str, object]:
    """Generate the client into `dest / GENERATED_PACKAGE`; returns notes for the results.

    Raises:
        GenerationError: The generator is not installed, or failed on the patched spec too.
    """
    generator = _generator()
    out = dest / GENERATED_PACKAGE
    version = subprocess.run(
        [generator, "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    first = _run(generator, spec, out)
    notes: dict[str, object] = {"generator": version, "spec": str(spec), "patched": False}
    if first.returncode == 0 and (out / "__init__.py").exists():
        notes["warnings"] = _warnings(first)
        return notes
    shutil.rmtree(out, ignore_errors=True)
    patched = dest / "inject_context.patched.openapi.yaml"
    patched.write_text(patch_nullable(spec.read_text()))
    second = _run(generator, patched, out)
    if second.returncode != 0 or not (out / "__init__.py").exists():
        raise GenerationError(
            f"openapi-python-client failed on the spec and on the patched copy:\n"
            f"{first.stdout}{first.stderr}\n---\n{second.stdout}{second.stderr}"
        )
    notes.update(
        patched=True,
        why=(first.stdout + first.stderr).strip()[-2000:],
        warnings=_warnings(second),
    )
    return notes


def _warnings(result: subprocess.CompletedProcess[str]) -> str:
    text = (result.stdout + result.stderr).strip()
    return "" if text == f"Generating {GENERATED_PACKAGE}" or "Warning" not in text else text


def main() -> None:
    dest = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="osvi-gen-"))
    print(generate(dest))
    print(f"generated into {dest / GENERATED_PACKAGE}")


if __name__ == "__main__":
    main()
