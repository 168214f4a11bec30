"""The layout limits of the code base, as tests (issue 24's "done when"):

- no module in svd_ms/ or svd_tools/ above 400 lines, the sgm-mirroring model folders
  (svd_ms/modules/, svd_ms/models/) aside;
- no class above 250 lines, anywhere in svd_ms/, svd_tools/ or the entry scripts;
- no import circle among the modules of svd_ms and svd_tools (lazy imports count; a package's
  `__getattr__` lazy exports do not);
- no file in the repository edits sys.path;
- every module under svd_ms/ and svd_tools/ outside the model folders has its test file at the
  mirrored path, and that file names the module it tests.

The mirrored path:  svd_ms/a/b.py -> tests/a/test_b.py;  svd_ms/c.py -> tests/test_c.py;
svd_tools/x.py -> tests/svd_tools/test_x.py;  <pkg>/__main__.py -> tests/<pkg>/test_main.py.
A package's `__init__.py` needs no test file while it only gathers names (imports, `__all__`, a
docstring, the lazy-export hooks `__getattr__`/`__dir__`); one that holds its own functions or
classes maps to tests/<pkg>/test_init.py.

Everything here reads source text and ASTs; nothing is imported, so the checks are fast and
see the files as they are on disk. Each failure lists every offender.
"""
import ast
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("svd_ms", "svd_tools")
MODEL_FOLDERS = ("svd_ms/modules/", "svd_ms/models/")  # mirror sgm file by file; tested through the models
ENTRY_SCRIPTS = ("image_to_video.py", "train.py", "video_to_views.py")
MAX_MODULE_LINES = 400
MAX_CLASS_LINES = 250
SKIPPED_DIRS = {".git", ".venv", "venv", "node_modules", "__pycache__", "build", "dist", "shared", "outputs"}
LAZY_EXPORT_HOOKS = {"__getattr__", "__dir__"}


# ---------------------------------------------------------------------------------- walking the tree

def package_files():
    """Repository-relative paths (with '/') of every .py file in svd_ms/ and svd_tools/."""
    out = []
    for package in PACKAGES:
        for folder, dirs, files in os.walk(os.path.join(ROOT, package)):
            dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS)
            out += [os.path.relpath(os.path.join(folder, f), ROOT).replace(os.sep, "/")
                    for f in sorted(files) if f.endswith(".py")]
    return out


def repository_python_files():
    """Every .py file of the repository, virtual environments, caches and hidden folders aside."""
    out = []
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS and not d.startswith("."))
        out += [os.path.relpath(os.path.join(folder, f), ROOT).replace(os.sep, "/")
                for f in sorted(files) if f.endswith(".py")]
    return out


def read(rel):
    with open(os.path.join(ROOT, rel), encoding="utf-8") as f:
        return f.read()


def parse(rel):
    return ast.parse(read(rel), filename=rel)


def module_name(rel):
    """svd_ms/a/b.py -> svd_ms.a.b; svd_ms/a/__init__.py -> svd_ms.a."""
    parts = rel[:-3].split("/")
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def in_model_folder(rel):
    return rel.startswith(MODEL_FOLDERS)


# ---------------------------------------------------------------------------------- sizes

def test_no_module_above_the_line_limit():
    too_long = []
    for rel in package_files():
        if in_model_folder(rel):
            continue
        lines = len(read(rel).splitlines())
        if lines > MAX_MODULE_LINES:
            too_long.append(f"{rel}: {lines} lines")
    assert not too_long, f"modules above {MAX_MODULE_LINES} lines (split them by job):\n  " + "\n  ".join(too_long)


def class_lengths(tree):
    """(qualified name, lines) for every class in a module, nested ones included."""
    def walk(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                name = prefix + child.name
                start = min([child.lineno] + [d.lineno for d in child.decorator_list])
                yield name, child.end_lineno - start + 1
                yield from walk(child, name + ".")
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield from walk(child, prefix + child.name + ".")
    return list(walk(tree, ""))


def test_no_class_above_the_line_limit():
    files = package_files() + [s for s in ENTRY_SCRIPTS if os.path.isfile(os.path.join(ROOT, s))]
    too_long = [f"{rel}: class {name}, {lines} lines" for rel in files for name, lines in class_lengths(parse(rel))
                if lines > MAX_CLASS_LINES]
    assert not too_long, f"classes above {MAX_CLASS_LINES} lines (one class, one idea):\n  " + "\n  ".join(too_long)


def test_class_lengths_count_what_they_should():
    tree = ast.parse("@dataclass\nclass A:\n    x = 1\n\n    class B:\n        y = 2\n\n\ndef f():\n"
                     "    class C:\n        pass\n")
    assert class_lengths(tree) == [("A", 6), ("A.B", 2), ("f.C", 2)]


# ---------------------------------------------------------------------------------- import circles

def imported_modules(rel, tree, known):
    """The svd_ms/svd_tools modules `rel` imports, at any depth of its code (a lazy import inside a
    function still ties the two modules together), `if TYPE_CHECKING:` blocks aside. A package's
    `__init__` counts its module-level imports only: the lazy exports of its `__getattr__` are
    what makes `from svd_ms import X` cheap, not a dependency of the package on X's module.
    `from pkg import name` counts as importing pkg.name when that is a module, else pkg."""
    own = module_name(rel)
    is_init = rel.endswith("__init__.py")
    package = own if is_init else own.rpartition(".")[0]
    found = set()

    def visit(node):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for sub in child.orelse:
                    visit_one(sub)
                continue
            if is_init and isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            visit_one(child)

    def visit_one(node):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in known else target)
        visit(node)

    visit(tree)
    resolved = set()
    for name in found:
        # `import svd_ms.a.b` reaches svd_ms.a.b; an import of a name that is not a module file
        # (a typo would fail elsewhere) is attributed to its nearest known package
        while name and name not in known:
            name = name.rpartition(".")[0]
        if name and name != own:
            resolved.add(name)
    return resolved


def import_graph():
    files = package_files()
    known = {module_name(rel) for rel in files}
    return {module_name(rel): imported_modules(rel, parse(rel), known) for rel in files}


def import_circles(graph):
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, on_stack, stack, circles = {}, {}, set(), [], []
    counter = [0]

    def connect(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return sorted(circles)


def describe_circle(graph, members):
    """One concrete cycle through the component, as a -> b -> ... -> a, for the failure message."""
    members = set(members)
    start = min(members)
    path, seen = [start], {start}
    while True:
        nxt = sorted(w for w in graph[path[-1]] if w in members)
        back = [w for w in nxt if w == start]
        if back and len(path) > 1:
            return " -> ".join(path + [start])
        fresh = [w for w in nxt if w not in seen]
        if not fresh:
            # the way back to start leads through a module already on the path
            loop_to = next(w for w in nxt if w in seen)
            return " -> ".join(path[path.index(loop_to):] + [loop_to])
        path.append(fresh[0])
        seen.add(fresh[0])


def test_no_import_circles():
    graph = import_graph()
    circles = import_circles(graph)
    assert not circles, "import circles among svd_ms/svd_tools modules:\n  " + "\n  ".join(
        f"{', '.join(c)}  (e.g. {describe_circle(graph, c)})" for c in circles)


def test_import_graph_resolves_relative_and_lazy_imports():
    known = {"svd_ms", "svd_ms.a", "svd_ms.b", "svd_ms.pkg", "svd_ms.pkg.c", "svd_tools.x"}
    tree = ast.parse("from . import b\nfrom .pkg.c import thing\nimport numpy\n"
                     "def f():\n    from svd_tools.x import y\n"
                     "if TYPE_CHECKING:\n    from svd_ms.pkg import c\n")
    assert imported_modules("svd_ms/a.py", tree, known) == {"svd_ms.b", "svd_ms.pkg.c", "svd_tools.x"}
    tree = ast.parse("from .c import thing\nfrom .. import a\ndef __getattr__(name):\n    from svd_tools import x\n")
    assert imported_modules("svd_ms/pkg/__init__.py", tree, known) == {"svd_ms.pkg.c", "svd_ms.a"}


def test_circle_finder_finds_circles():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert import_circles(graph) == [["a", "b", "c"]]
    assert describe_circle(graph, ["a", "b", "c"]) == "a -> b -> c -> a"
    assert import_circles({"a": {"b"}, "b": set()}) == []


# ---------------------------------------------------------------------------------- sys.path

PATH_MUTATORS = {"insert", "append", "extend", "remove", "pop", "clear", "__setitem__", "__iadd__"}


def _is_sys_path(node):
    return (isinstance(node, ast.Attribute) and node.attr == "path" and isinstance(node.value, ast.Name)
            and node.value.id == "sys")


def sys_path_edits(tree):
    """Line numbers where the code changes sys.path (method calls, assignment, `from sys import
    path`, site.addsitedir)."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr in PATH_MUTATORS and _is_sys_path(node.func.value) or (node.func.attr == "addsitedir" and isinstance(node.func.value, ast.Name)
                  and node.func.value.id == "site"):
                lines.append(node.lineno)
        elif isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                if _is_sys_path(t) or (isinstance(t, ast.Subscript) and _is_sys_path(t.value)):
                    lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.module == "sys" and any(a.name == "path" for a in node.names):
            lines.append(node.lineno)
    return sorted(lines)


def test_nothing_edits_sys_path():
    edits = [f"{rel}:{line}" for rel in repository_python_files() for line in sys_path_edits(parse(rel))]
    assert not edits, ("sys.path edited (make the code importable as a package and run it with "
                       "`python -m` instead):\n  " + "\n  ".join(edits))


@pytest.mark.parametrize("code", ["import sys\nsys.path.insert(0, 'x')", "import sys\nsys.path.append('x')",
                                  "import sys\nsys.path = ['x']", "import sys\nsys.path[:0] = ['x']",
                                  "import sys\nsys.path += ['x']", "from sys import path",
                                  "import site\nsite.addsitedir('x')"])
def test_sys_path_finder_finds_edits(code):
    assert sys_path_edits(ast.parse(code)) != []


def test_sys_path_finder_leaves_reading_alone():
    assert sys_path_edits(ast.parse("import sys\nprint(sys.path[0], list(sys.path))\n'sys.path.insert'")) == []


# ---------------------------------------------------------------------------------- mirrored tests

def only_gathers_names(tree):
    """True for a package __init__ that holds no code of its own."""
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):  # docstring
            continue
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if all(isinstance(t, ast.Name) and t.id.startswith("__") for t in targets):  # __all__, __version__
                continue
            if all(isinstance(t, ast.Name) and t.id.startswith("_") for t in targets):  # lazy-export tables
                continue
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name in LAZY_EXPORT_HOOKS:
            continue
        return False
    return True


def mirrored_test_path(rel):
    """The test file a module must have, or None where none is needed (see the module docstring)."""
    parts = rel.split("/")
    package, inner, name = parts[0], parts[1:-1], parts[-1][:-3]
    if name == "__init__":
        if only_gathers_names(parse(rel)):
            return None
        name = "init"
    elif name == "__main__":
        name = "main"
    folder = ["tests"] + (inner if package == "svd_ms" else [package] + inner)
    return "/".join(folder + [f"test_{name}.py"])


def reexports(package):
    """{name: submodule} for the names a package's __init__ takes from its own submodules
    (`from .cluster import Cluster` in svd_ms/runtime/__init__.py: Cluster -> svd_ms.runtime.cluster)."""
    init = package.replace(".", "/") + "/__init__.py"
    if not os.path.isfile(os.path.join(ROOT, init)):
        return {}
    names = {}
    for node in parse(init).body:
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            for alias in node.names:
                names[alias.asname or alias.name] = f"{package}.{node.module}"
    return names


def names_module(test_rel, module):
    """Does the test file import or name `module` (svd_ms.a.b, a name its package re-exports from
    it, or svd_ms/a/b.py as a path)?"""
    text = read(test_rel)
    parent, _, leaf = module.rpartition(".")
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import) and any(a.name == module or a.name.startswith(module + ".")
                                                for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            if node.module == module or node.module.startswith(module + "."):
                return True
            if node.module == parent and any(a.name == leaf for a in node.names):
                return True
            if node.module == parent and any(reexports(parent).get(a.name) == module for a in node.names):
                return True
    path = module.replace(".", "/")
    return bool(re.search(rf"(?<![\w.]){re.escape(module)}(?![\w])", text)) or path + ".py" in text or (
        path + "/" in text)


def test_every_module_has_its_mirrored_test_file():
    missing, unrelated = [], []
    for rel in package_files():
        if in_model_folder(rel):
            continue
        test_rel = mirrored_test_path(rel)
        if test_rel is None:
            continue
        if not os.path.isfile(os.path.join(ROOT, test_rel)):
            missing.append(f"{rel} -> {test_rel}")
        elif not names_module(test_rel, module_name(rel)):
            unrelated.append(f"{test_rel} never imports or names {module_name(rel)}")
    problems = []
    if missing:
        problems.append("modules without their mirrored test file:\n  " + "\n  ".join(missing))
    if unrelated:
        problems.append("mirrored test files that do not test their module:\n  " + "\n  ".join(unrelated))
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("rel, expected", [
    ("svd_ms/params.py", "tests/test_params.py"),
    ("svd_ms/runtime/cluster.py", "tests/runtime/test_cluster.py"),
    ("svd_ms/app/__main__.py", "tests/app/test_main.py"),
    ("svd_tools/convert.py", "tests/svd_tools/test_convert.py"),
])
def test_mirrored_path_rule(rel, expected):
    assert mirrored_test_path(rel) == expected


def test_a_reexported_name_counts_as_naming_its_module():
    assert reexports("svd_ms.runtime").get("setup_device") == "svd_ms.runtime.device"


def test_init_that_only_gathers_names_needs_no_test():
    assert only_gathers_names(ast.parse('"""doc"""\nfrom .a import b\n__all__ = ["b"]\n'
                                        "def __getattr__(name):\n    return 1\n"))
    assert not only_gathers_names(ast.parse("def helper():\n    return 1\n"))
