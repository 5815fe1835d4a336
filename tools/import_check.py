"""Inference stays independent of training: no module of the salong package outside
salong/train/ imports salong.train, except the CLI's `salong train ...` commands.

    python tools/import_check.py     # prints each such import as PATH:LINE: STATEMENT; exit 1 if any

Imports are found with `ast`, at any depth (a function's lazy import counts), in every
spelling: `import salong.train.x`, `from salong.train import x`, `from salong import train`
and their relative forms. The CLI's train commands are the functions the CLI modules
(salong/cli.py, and salong/cli_train.py, which holds them) register under `train_app`
(directly or through the `_train_command` decorator) and `_Run`, the options they share.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "salong"
TRAIN = "salong.train"
CLI = (Path("salong/cli.py"), Path("salong/cli_train.py"))  # where the train commands may import salong.train
TRAIN_DECORATORS = ("train_app", "_train_command")  # names a train command's decorator uses
TRAIN_HELPERS = ("_Run",)  # classes of cli.py that only the train commands use


def _module_name(path: Path) -> str:
    parts = path.with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """The full names an import statement binds or reads (relative ones resolved)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        package = module.split(".") if is_package else module.split(".")[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join([*package, base] if base else package)
    return [base, *(f"{base}.{alias.name}" for alias in node.names)]


def _is_train(name: str) -> bool:
    return name == TRAIN or name.startswith(TRAIN + ".")


def _is_train_command(node: ast.AST) -> bool:
    if isinstance(node, ast.ClassDef) and node.name in TRAIN_HELPERS:
        return True
    decorators = getattr(node, "decorator_list", [])
    return any(isinstance(n, ast.Name) and n.id in TRAIN_DECORATORS for d in decorators for n in ast.walk(d))


def _scan(tree: ast.AST, module: str, is_package: bool, exempt: bool, source: str, rel: Path) -> list[str]:
    found = []

    def visit(node: ast.AST, inside_train_command: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = inside_train_command or (exempt and _is_train_command(child))
            if isinstance(child, (ast.Import, ast.ImportFrom)) and not inside:
                if any(_is_train(name) for name in _imported(child, module, is_package)):
                    statement = " ".join(ast.get_source_segment(source, child).split())
                    found.append(f"{rel.as_posix()}:{child.lineno}: {statement}")
            visit(child, inside)

    visit(tree, False)
    return found


def train_imports(root: Path = ROOT) -> list[str]:
    """Every import of salong.train in the package outside salong/train/, as 'PATH:LINE: STATEMENT'."""
    found = []
    for path in sorted((root / PACKAGE).rglob("*.py")):
        rel = path.relative_to(root)
        if rel.parts[:2] == (PACKAGE, "train"):
            continue
        source = path.read_text(encoding="utf-8")
        tree = ast.parse(source, filename=str(rel))
        found += _scan(tree, _module_name(rel), rel.name == "__init__.py", rel in CLI, source, rel)
    return found


def main() -> int:
    found = train_imports()
    for line in found:
        print(line)
    if found:
        print(f"{len(found)} import(s) of {TRAIN} outside salong/train/ and the CLI's train commands",
              file=sys.stderr)
        return 1
    print(f"no imports of {TRAIN} outside salong/train/ and the CLI's train commands")
    return 0


if __name__ == "__main__":
    sys.exit(main())
