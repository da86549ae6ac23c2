"""Jupyter notebooks as submissions: their definitions as a module, their printed accuracy.

A notebook is read here as data (JSON through nbformat); none of it runs in the grader.
From its code cells we keep what a model file needs (imports, function and class
definitions, constants) and drop everything else: training loops, plots, downloads,
``!shell`` and ``%magic`` lines, any other top-level statement. The result is a plain
Python module the harness imports inside the sandbox exactly like a ``.py`` model file,
with a map from its lines back to the notebook's cells for error messages.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat

from grader.claims import Claim, last_per_task
from grader.files import UntrustedFileError, read_untrusted

SUFFIX = ".ipynb"
MAX_BYTES = 64 * 2**20  # notebooks with many saved figures run to tens of MiB
_HEADER = (
    "# Built by the grader from {name}: only its imports, functions, classes and constants.\n"
    "# Each block is marked with its cell (counted from 1 at the top, markdown cells included).\n"
)
_FILE_HEADER = "# Built by the grader from {name}: only its imports, functions, classes and constants.\n"
# Cell magics whose body is ordinary Python; any other (%%bash, %%writefile, ...) is not.
_PYTHON_CELL_MAGICS = {"time", "timeit", "capture"}
_MAGIC_LINE = re.compile(
    r"^(?P<indent>\s*)(?:[!%]|[A-Za-z_][\w.]*\s*=\s*[!%]|\?{1,2}[\w.]+\s*$|[\w.]+\?{1,2}\s*$)"
)
# `%run models.py` (or `%run -i src/models.py`) of a file beside the notebook: what the notebook
# gets from it is read as `from models import *`, as a star import of a sibling file is.
_RUN_LINE = re.compile(r"^(?P<indent>\s*)%run\s+(?:-i\s+)?(?P<path>(?:[A-Za-z_]\w*/)*[A-Za-z_]\w*)\.py\s*$")
_ALLOWED_IN_CONSTANTS = (
    ast.Constant, ast.Tuple, ast.List, ast.Set, ast.Dict, ast.Starred, ast.BinOp, ast.UnaryOp,
    ast.BoolOp, ast.Compare, ast.IfExp, ast.Subscript, ast.Slice, ast.JoinedStr,
    ast.FormattedValue, ast.operator, ast.unaryop, ast.boolop, ast.cmpop, ast.expr_context,
)  # fmt: skip
# Calls a constant may be computed with: they read a literal, gather literals into a namespace
# or ask which device there is, and change nothing (`NUM_CLASSES = len(CLASSES)`,
# `device = torch.device("cuda" if torch.cuda.is_available() else "cpu")`,
# `args = argparse.Namespace(width=64, num_classes=10)`); a model class often reads such a name.
_PURE_CALLS = frozenset(
    {
        "torch.device", "torch.cuda.is_available", "torch.cuda.device_count",
        "torch.backends.mps.is_available", "len", "int", "float", "str", "bool", "abs", "min",
        "max", "round", "sum", "tuple", "list", "dict", "range", "sorted", "argparse.Namespace",
        "types.SimpleNamespace", "SimpleNamespace",
    }
)  # fmt: skip
# An argparse parser's set-up and its parse of no arguments (the sandbox gives the file its own
# name as its only argument): a model class often reads `args.width`. The parser is a constant
# once made from constants; these methods, called with constants, keep it one.
_PARSER_CALLS = frozenset({"argparse.ArgumentParser", "ArgumentParser"})
_PARSER_METHODS = frozenset(
    {"add_argument", "add_argument_group", "add_mutually_exclusive_group", "set_defaults",
     "parse_args", "parse_known_args"}
)  # fmt: skip
# Builtins a constant may name, as `type=int` in `parser.add_argument("--width", type=int)`.
_BUILTIN_VALUES = frozenset({"int", "float", "str", "bool"})
# What ast.parse raises on text it cannot read, besides SyntaxError on plain mistakes.
_UNPARSABLE = (SyntaxError, ValueError, RecursionError, MemoryError)
_DEFINITIONS = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


class NotebookError(ValueError):
    """The notebook cannot be read; the message says why and what to do."""


@dataclass(frozen=True)
class Origin:
    """Line ``module_line`` of the built module is line ``cell_line`` of cell ``cell``."""

    module_line: int
    cell: int
    cell_line: int


@dataclass
class NotebookModule:
    """The module built from one notebook (or from a ``.py`` file's definitions), or why there is
    none (``problem``)."""

    notebook: str  # path relative to the submission, e.g. "lab2.ipynb" (or "model.py")
    source: str = ""
    origins: list[Origin] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    problem: str | None = None

    @property
    def file_name(self) -> str:
        """The module's file name: the notebook's stem, as an identifier."""
        return re.sub(r"\W", "_", Path(self.notebook).stem) + ".py"


@dataclass(frozen=True)
class _Block:
    cell: int
    line: int  # first line of the block within its cell
    text: str
    node: ast.stmt

    @property
    def future(self) -> bool:
        """A ``from __future__`` import, which must open the module."""
        return isinstance(self.node, ast.ImportFrom) and self.node.module == "__future__"


@dataclass
class Notebook:
    name: str  # path relative to the submission
    cells: list[Any]  # nbformat cells, version 4

    def module(self, wanted: Iterable[str] = ()) -> NotebookModule:
        """The notebook's definitions as one module; ``wanted`` names (the tasks' models) stay
        even when only an import binds them."""
        built = NotebookModule(self.name)
        blocks: list[_Block] = []
        constants: set[str] = set()
        for number, cell in self.code_cells():
            tree, text = _parse_cell(cell_source(cell))
            if isinstance(tree, SyntaxError):
                built.warnings.append(_skipped_cell(self.name, number, tree))
                continue
            blocks += _kept_blocks(tree, text, number, constants)
        built.source, built.origins = _assemble(self.name, _needed(blocks, wanted))
        return built

    def claims(self, positions: dict[str, int]) -> dict[str, Claim]:
        """The last test accuracy printed in the saved outputs for each task, by task id;
        ``positions`` as in grader.claims.last_per_task, which reads the lines."""
        return last_per_task(self._output_lines(), positions)

    def code(self) -> str:
        """Every code cell's source without IPython's shell, magic and help lines."""
        cells = [cell_source(cell).split("\n") for _, cell in self.code_cells()]
        kept = ["\n".join(line for line in lines if not _MAGIC_LINE.match(line)) for lines in cells]
        return "\n\n".join(kept)

    def code_cells(self) -> Iterator[tuple[int, Any]]:
        """Each code cell with its place in the notebook (from 1, markdown cells counted)."""
        for number, cell in enumerate(self.cells, 1):
            if cell.get("cell_type") == "code":
                yield number, cell

    def _output_lines(self) -> Iterator[tuple[int, str]]:
        for number, cell in self.code_cells():
            outputs = cell.get("outputs")
            for output in outputs if isinstance(outputs, list) else []:
                for line in _output_text(output).splitlines():
                    yield number, line


def definitions(root: Path, name: str, wanted: Iterable[str] = ()) -> NotebookModule:
    """A ``.py`` file's definitions only (imports, functions, classes, constants), built like a
    notebook's from one cell numbered 0: what the harness imports when the file's own
    module-level code fails or runs too long. ``wanted`` as in Notebook.module. Its
    ``problem`` says why there is none."""
    built = NotebookModule(name)
    try:
        raw = read_untrusted(root / name, MAX_BYTES)
        text = importlib.util.decode_source(raw)  # UTF-8, or the encoding its coding line declares
    except (OSError, SyntaxError, UnicodeDecodeError, LookupError) as err:
        built.problem = f"{name} cannot be read ({err})"
        return built
    try:
        tree = ast.parse(text)
    except _UNPARSABLE as err:
        try:  # a file saved from a notebook keeps its !pip and %matplotlib lines
            text = _without_magics(text)
            tree = ast.parse(text)
        except _UNPARSABLE:
            built.problem = f"{name} is not valid Python ({err})"
            return built
    built.source, built.origins = _assemble(name, _needed(_kept_blocks(tree, text, 0, set()), wanted))
    return built


def read(root: Path, name: str) -> Notebook:
    """The notebook at ``root / name``, as data; NotebookError if it cannot be read."""
    try:
        raw = read_untrusted(root / name, MAX_BYTES)
    except UntrustedFileError as err:
        if "limit" in str(err):
            raise NotebookError(
                f"{name} is larger than {MAX_BYTES // 2**20} MiB; "
                "clear the outputs of big figures and save it again"
            ) from err
        raise NotebookError(f"{name} cannot be read: {err}; submit the notebook itself") from err
    try:
        text = raw.decode("utf-8-sig")  # a byte-order mark, as some Windows editors write, is dropped
    except UnicodeDecodeError as err:
        raise NotebookError(f"{name} is not UTF-8 text ({err}); save it again from Jupyter") from err
    return parse(name, text)


def parse(name: str, text: str) -> Notebook:
    """A notebook's JSON text, as data; NotebookError if it is not a notebook."""
    try:
        with warnings.catch_warnings():
            # Old notebooks lack cell ids and the like: harmless for reading definitions.
            warnings.simplefilter("ignore")
            nb = nbformat.reads(text, as_version=4)
    except Exception as err:  # nbformat raises JSON, schema and conversion errors of many kinds
        raise NotebookError(
            f"{name} is not a readable Jupyter notebook ({type(err).__name__}: {err}); "
            "open it in Jupyter and save it again"
        ) from err
    cells = nb.get("cells")
    if not isinstance(cells, list):
        raise NotebookError(f"{name} has no list of cells; open it in Jupyter and save it again")
    return Notebook(name, [cell for cell in cells if isinstance(cell, dict)])


# --- definitions ------------------------------------------------------------------------


def cell_source(cell: Any) -> str:
    """A cell's source as one string (nbformat may keep it as a list of lines)."""
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else str(source)


def _parse_cell(text: str) -> tuple[ast.Module | SyntaxError, str]:
    """The cell's syntax tree and the text it was parsed from (magics made ``pass``)."""
    first = text.lstrip().split("\n", 1)[0]
    if first.startswith("%%"):
        magic = first[2:].split(maxsplit=1)[0] if first[2:].strip() else ""
        if magic not in _PYTHON_CELL_MAGICS:
            return ast.parse(""), ""  # a cell of shell, HTML, a file to write...: not Python
    try:
        return ast.parse(text), text
    except _UNPARSABLE:
        pass
    text = _without_magics(text)
    try:
        return ast.parse(text), text
    except SyntaxError as err:
        return err, text
    except _UNPARSABLE as err:  # a NUL byte, or nesting deeper than the parser goes
        return SyntaxError(str(err) or "nested too deeply to read"), text


def _without_magics(text: str) -> str:
    """``text`` with every IPython shell, magic and help line made ``pass`` at its indent, but
    ``%run`` of a Python file, which becomes a star import of it (see ``_RUN_LINE``).

    A line is replaced rather than removed so that line numbers stay those of the cell,
    and a block whose only statement was a magic stays a block.
    """
    lines = text.split("\n")
    for i, line in enumerate(lines):
        match = _MAGIC_LINE.match(line)
        if match:
            run = _RUN_LINE.match(line)
            module = run["path"].replace("/", ".") if run and not run["indent"] else None
            lines[i] = match["indent"] + (f"from {module} import *" if module else "pass")
    return "\n".join(lines)


def _skipped_cell(name: str, number: int, err: SyntaxError) -> str:
    where = f", line {err.lineno} of the cell" if err.lineno else ""
    return (
        f"{name}: cell {number} is not valid Python ({err.msg}{where}) and was skipped; "
        "nothing it defines reaches the grader"
    )


def _kept_blocks(tree: ast.Module, text: str, cell: int, constants: set[str]) -> list[_Block]:
    """The statements kept; ``constants`` (the names a constant may read, see ``_constant``)
    follows the bindings in order, as running the cells would."""
    lines = text.split("\n")
    blocks = []
    for node in tree.body:
        if _kept(node, constants):
            constants |= _assigned(node)
            if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                (constants.add if _record_class(node) else constants.discard)(node.name)
            blocks.append(_Block(cell, _first_line(node), _segment(text, lines, node), node))
        else:
            constants -= _assigned(node)
    return blocks


_RECORD_DECORATORS = {"dataclass", "dataclasses.dataclass"}
_RECORD_BASES = {"NamedTuple", "typing.NamedTuple"}


def _record_class(node: ast.stmt) -> bool:
    """A dataclass or NamedTuple: calling it only stores its arguments (``cfg = Config(width=64)``,
    a configuration a model class reads)."""
    if not isinstance(node, ast.ClassDef):
        return False
    decorators = [d.func if isinstance(d, ast.Call) else d for d in node.decorator_list]
    if any(_dotted(d) in _RECORD_DECORATORS for d in decorators):
        return not any(isinstance(s, ast.FunctionDef) and s.name == "__post_init__" for s in node.body)
    return bool(node.bases) and all(_dotted(b) in _RECORD_BASES for b in node.bases)


def _kept(node: ast.stmt, constants: set[str]) -> bool:
    """Whether a top-level statement is a definition the model's module needs.

    ``constants`` are the names bound so far by kept constant assignments.
    """
    if isinstance(node, _DEFINITIONS):
        return True
    if isinstance(node, ast.Try):
        # `try: import x / except ImportError: ...`, made only of what would be kept anyway
        inner = [*node.body, *node.orelse, *node.finalbody]
        inner += [s for handler in node.handlers for s in handler.body]
        return all(isinstance(s, ast.Pass) or _kept(s, constants) for s in inner)
    if isinstance(node, ast.Assign):
        return all(_plain_target(t) for t in node.targets) and _constant(node.value, constants)
    if isinstance(node, ast.AnnAssign):
        return (
            node.value is not None
            and isinstance(node.target, ast.Name)
            and _constant(node.value, constants)
            and not any(isinstance(n, ast.Call | ast.Lambda) for n in ast.walk(node.annotation))
        )
    if isinstance(node, ast.AugAssign):
        return (
            isinstance(node.target, ast.Name)
            and node.target.id in constants
            and _constant(node.value, constants)
        )
    if isinstance(node, ast.Expr):  # parser.add_argument("--width", type=int, default=64)
        return (
            isinstance(node.value, ast.Call)
            and isinstance(node.value.func, ast.Attribute)
            and node.value.func.attr in _PARSER_METHODS
            and _constant(node.value, constants)
        )
    return False


def _constant(node: ast.AST, constants: set[str]) -> bool:
    """Built only from literals, names in ``constants`` and their attributes, operators, and
    calls made with such values to the functions in ``_PURE_CALLS``, to the record classes in
    ``constants`` (see ``_record_class``) or to an argparse parser's ``_PARSER_METHODS``: no
    other call."""
    if isinstance(node, ast.Name):
        return node.id in constants or node.id in _BUILTIN_VALUES
    if isinstance(node, ast.Attribute):
        return _constant(node.value, constants)
    if isinstance(node, ast.Call):
        callee = _dotted(node.func)
        method = isinstance(node.func, ast.Attribute) and node.func.attr in _PARSER_METHODS
        return (
            (
                callee in _PURE_CALLS
                or callee in _PARSER_CALLS
                or (isinstance(node.func, ast.Name) and callee in constants)
                or (method and _constant(node.func, constants))
            )
            and all(_constant(arg, constants) for arg in node.args)
            and all(k.arg is not None and _constant(k.value, constants) for k in node.keywords)
        )
    if not isinstance(node, _ALLOWED_IN_CONSTANTS):
        return False
    return all(_constant(child, constants) for child in ast.iter_child_nodes(node))


def _dotted(node: ast.expr) -> str | None:
    """``torch.cuda.is_available`` for that chain of attributes on a name; None for anything else."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        head = _dotted(node.value)
        return f"{head}.{node.attr}" if head is not None else None
    return None


def _plain_target(target: ast.expr) -> bool:
    if isinstance(target, ast.Tuple | ast.List):
        return all(_plain_target(t) for t in target.elts)
    return isinstance(target, ast.Name)


def _assigned(node: ast.stmt) -> set[str]:
    """The names an assignment binds (empty for any other statement)."""
    targets: list[ast.expr] = []
    if isinstance(node, ast.Assign):
        targets = node.targets
    elif isinstance(node, ast.AnnAssign | ast.AugAssign):
        targets = [node.target]
    return {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}


def _needed(blocks: list[_Block], wanted: Iterable[str]) -> list[_Block]:
    """Leave out imports that no kept statement uses: those fed the plots, progress bars
    and downloads that were dropped, and their modules may not exist in the sandbox. An
    import that binds a ``wanted`` name, or one listed in ``__all__``, is used."""
    used = set(wanted) | {
        name.id
        for block in blocks
        if _import_names(block.node) is None
        for name in ast.walk(block.node)
        if isinstance(name, ast.Name)
    }
    used |= {
        item.value
        for block in blocks
        if _assigns_all(block.node)
        for item in ast.walk(block.node)
        if isinstance(item, ast.Constant) and isinstance(item.value, str)
    }
    return [b for b in blocks if (names := _import_names(b.node)) is None or "*" in names or names & used]


def _assigns_all(node: ast.stmt) -> bool:
    targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
    return any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets)


def _import_names(node: ast.stmt) -> set[str] | None:
    """The names an import (or a ``try`` made only of imports) binds; "*" for a star or
    ``__future__`` import, which always stays; None for any other statement."""
    if isinstance(node, ast.Import):
        return {(alias.asname or alias.name).split(".")[0] for alias in node.names}
    if isinstance(node, ast.ImportFrom):
        star = node.module == "__future__" or any(alias.name == "*" for alias in node.names)
        return {"*"} if star else {alias.asname or alias.name for alias in node.names}
    if isinstance(node, ast.Try):
        inner = [*node.body, *node.orelse, *node.finalbody, *(s for h in node.handlers for s in h.body)]
        found = [_import_names(s) for s in inner if not isinstance(s, ast.Pass)]
        if found and all(names is not None for names in found):
            return set().union(*(names for names in found if names is not None))
    return None


def _first_line(node: ast.stmt) -> int:
    decorators = getattr(node, "decorator_list", [])
    return min([node.lineno, *(d.lineno for d in decorators)])


def _segment(text: str, lines: list[str], node: ast.stmt) -> str:
    """A statement's exact text; a compound one (with its decorators) is whole lines."""
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Try):
        return "\n".join(lines[_first_line(node) - 1 : node.end_lineno])
    return ast.get_source_segment(text, node) or ""


def _assemble(name: str, blocks: list[_Block]) -> tuple[str, list[Origin]]:
    """The module's text, and where each block came from. Cell 0 is a whole ``.py`` file."""
    out = (_HEADER if any(b.cell for b in blocks) else _FILE_HEADER).format(name=name).splitlines()
    origins = []
    last_cell = None
    for block in sorted(blocks, key=lambda b: not b.future):  # stable: cell order otherwise kept
        if block.cell != last_cell and block.cell:
            out.append(f"# {name}, cell {block.cell}")
            last_cell = block.cell
        origins.append(Origin(len(out) + 1, block.cell, block.line))
        out += block.text.split("\n")
    return "\n".join(out) + "\n", origins


# --- printed output --------------------------------------------------------------------


def _output_text(output: Any) -> str:
    """What an output showed as text: a stream, or the plain-text form of a result."""
    if not isinstance(output, dict):
        return ""
    if output.get("output_type") == "stream":
        text = output.get("text", "")
    else:
        text = (output.get("data") or {}).get("text/plain", "")
    return "".join(text) if isinstance(text, list) else str(text)
