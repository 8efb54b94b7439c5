"""Regenerate the Python gRPC code from proto/ (the one command; grpcio-tools is pinned in pyproject).

    python scripts/gen_proto.py            # write gen/cryptolens/v1/*
    python scripts/gen_proto.py --check    # exit 1 if the committed code is stale
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[1]
PROTO_DIR = ROOT / "proto"
OUT_DIR = ROOT / "gen"
PACKAGE = Path("cryptolens") / "v1"


def generate(out: Path) -> None:
    protos = sorted(str(p.relative_to(PROTO_DIR)) for p in (PROTO_DIR / PACKAGE).glob("*.proto"))
    include = Path(protoc.__file__).parent / "_proto"  # google/protobuf/*.proto shipped with grpcio-tools
    # descriptors.binpb keeps the proto comments, which generated code drops: the servers' reflection
    # serves it, so `grpcurl describe` shows every field's documentation.
    args = ["protoc", f"-I{PROTO_DIR}", f"-I{include}", f"--python_out={out}", f"--pyi_out={out}",
            f"--grpc_python_out={out}", "--include_source_info",
            f"--descriptor_set_out={out / PACKAGE / 'descriptors.binpb'}", *protos]
    (out / PACKAGE).mkdir(parents=True, exist_ok=True)
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for pkg in (out / "cryptolens", out / PACKAGE):
        (pkg / "__init__.py").write_text('"""Generated from proto/ by scripts/gen_proto.py. Do not edit."""\n')


def stale_files(fresh: Path) -> list[str]:
    cmp = filecmp.dircmp(fresh / PACKAGE, OUT_DIR / PACKAGE, ignore=["__pycache__"])
    return sorted(cmp.left_only + cmp.right_only + cmp.diff_files)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if gen/ differs from proto/")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        if args.check:
            stale = stale_files(Path(tmp)) if (OUT_DIR / PACKAGE).exists() else ["(missing)"]
            if stale:
                print(f"generated code is stale: {', '.join(stale)}; run python scripts/gen_proto.py")
                return 1
            print("generated code matches proto/")
            return 0
        shutil.rmtree(OUT_DIR / "cryptolens", ignore_errors=True)
        shutil.copytree(Path(tmp) / "cryptolens", OUT_DIR / "cryptolens")
    print(f"wrote {OUT_DIR / PACKAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
