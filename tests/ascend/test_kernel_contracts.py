"""The contract doubles: every Ascend-only operation svd-ms calls has one (found by walking the
source), and each double refuses what its documented contract refuses."""
import ast
import pathlib
import re

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, ops

import svd_ms
from ascend import kernel_contracts
from svd_ms import policy

PACKAGE = pathlib.Path(svd_ms.__file__).parent
ROOTS = {"ops": ops, "mint": ms.mint}


def _documented_platforms(obj) -> str:
    """The platforms a MindSpore docstring names: its "Supported Platforms:" line, or the device
    column of a "Supported Platforms" table (mint's interpolate documents it per argument row)."""
    doc = getattr(obj, "__doc__", None) or ""
    match = re.search(r"Supported Platforms:\s*\n\s*(.*)", doc)
    if not match:
        return ""
    if not match.group(1).startswith("+"):
        return match.group(1)
    table = doc[match.start():].split("\n\n")[1]  # the table, up to the first blank line
    rows = [line.split("|") for line in table.splitlines() if line.strip().startswith("|")]
    return " ".join(f"``{row[-2].strip()}``" for row in rows[1:])


def _operation(node):
    """'ops.name' / 'mint.a.b' and the MindSpore object for such an attribute node, else None."""
    chain = []
    while isinstance(node, ast.Attribute):
        chain.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name) or node.id not in ROOTS or not chain:
        return None
    obj = ROOTS[node.id]
    for attr in reversed(chain):
        obj = getattr(obj, attr, None)
    return (".".join([node.id] + list(reversed(chain))), obj) if obj is not None else None


def _ascend_policy_functions():
    """The functions of svd_ms/policy.py whose answer depends on the device being Ascend."""
    tree = ast.parse((PACKAGE / "policy.py").read_text())
    return {f.name for f in tree.body if isinstance(f, ast.FunctionDef)
            and any(isinstance(n, ast.Constant) and n.value == "Ascend" for n in ast.walk(f))}


def _call_sites_in(source: str, where: str, ascend_functions, sites) -> None:
    """Add to `sites` ({operation: [where:line]}) the Ascend-only call sites of one module's
    source: (a) operations whose MindSpore docstring names Ascend as their only platform, wherever
    called, and (b) operations documented without CPU support that run inside a branch on a value
    an Ascend-dependent policy function decided."""
    tree = ast.parse(source)
    decided = set()  # names and attributes assigned from an Ascend-dependent policy call
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(
                isinstance(c, ast.Call) and isinstance(c.func, ast.Attribute) and c.func.attr in ascend_functions
                for c in ast.walk(node.value)):
            decided |= {getattr(t, "attr", getattr(t, "id", None)) for t in node.targets}
    decided |= {a.arg for f in ast.walk(tree) if isinstance(f, ast.FunctionDef) for a in f.args.args
                if a.arg in decided}
    branch_nodes = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and any(getattr(n, "attr", getattr(n, "id", None)) in decided
                                            for n in ast.walk(node.test)):
            branch_nodes |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    for node in ast.walk(tree):
        found = isinstance(node, ast.Attribute) and _operation(node)
        if not found:
            continue
        name, obj = found
        platforms = _documented_platforms(obj)
        only_ascend = "Ascend" in platforms and "GPU" not in platforms and "CPU" not in platforms
        if only_ascend or (id(node) in branch_nodes and platforms and "CPU" not in platforms):
            sites.setdefault(name, []).append(f"{where}:{node.lineno}")


def _package_modules():
    return sorted(PACKAGE.rglob("*.py"))


def _ascend_only_call_sites():
    """{operation name: [file:line]} over every module of the package (see _call_sites_in)."""
    ascend_functions = _ascend_policy_functions()
    sites = {}
    for path in _package_modules():
        _call_sites_in(path.read_text(), str(path.relative_to(PACKAGE.parent)), ascend_functions, sites)
    return sites


def test_every_ascend_only_operation_has_a_double():
    sites = _ascend_only_call_sites()
    print("[ascend] Ascend-only call sites:", sites)
    assert {"ops.flash_attention_score", "ops.conv3d"} <= set(sites), "the walk must find the known call sites"
    missing = {name: where for name, where in sites.items() if name not in kernel_contracts.DOUBLES}
    assert not missing, f"Ascend-only operations without a contract double: {missing}"


def test_the_walk_covers_the_attention_modules():
    """The walk reads every attention module, SV4D 2.0's space-time attention included, and would
    report an Ascend-only operation there: the same source with its view-conditioning resize
    swapped for mint's (documented for Ascend only) is caught."""
    walked = {str(p.relative_to(PACKAGE)) for p in _package_modules()}
    spacetime = PACKAGE / "modules" / "spacetime_attention.py"
    assert {"modules/attention.py", "modules/video_attention.py", "modules/spacetime_attention.py"} <= walked
    source = spacetime.read_text()
    functions = _ascend_policy_functions()
    found = {}
    _call_sites_in(source, "spacetime_attention.py", functions, found)
    assert not found, f"spacetime_attention.py calls Ascend-only operations directly: {found}"
    assert "ops.interpolate(" in source and "CPU" in _documented_platforms(ops.interpolate)
    _call_sites_in(source.replace("ops.interpolate(", "mint.nn.functional.interpolate(", 1), "mutated", functions, found)
    assert list(found) == ["mint.nn.functional.interpolate"], found


def test_flash_double_refuses_what_the_kernel_refuses():
    q = Tensor(np.ones((2, 4, 32), np.float16))
    out = kernel_contracts.flash_attention_score(q, q, q, 2, scalar_value=0.25)
    assert out.dtype == ms.float16 and out.shape == (2, 4, 32)
    with pytest.raises(TypeError, match="float16 or bfloat16"):
        kernel_contracts.flash_attention_score(q.astype(ms.float32), q, q, 2, scalar_value=0.25)
    with pytest.raises(TypeError, match="dtypes differ"):
        kernel_contracts.flash_attention_score(q, q.astype(ms.float32), q, 2, scalar_value=0.25)
    with pytest.raises(RuntimeError, match="multiple of 16"):
        kernel_contracts.flash_attention_score(q, q, q, 4, scalar_value=0.25)  # D = 8
    with pytest.raises(TypeError, match="floats"):
        kernel_contracts.flash_attention_score(q, q, q, 2, scalar_value=1)
    big = Tensor(np.ones((2049, 1, 16), np.float16))
    with pytest.raises(RuntimeError, match="1..2048"):
        kernel_contracts.flash_attention_score(big, big, big, 1, scalar_value=0.25)


def test_conv3d_double_takes_float16_only():
    x = Tensor(np.ones((1, 4, 3, 5, 5), np.float16))
    w = Tensor(np.ones((2, 4, 3, 3, 3), np.float16))
    y = kernel_contracts.conv3d(x, w, None, 1, "pad", (1, 1, 1))
    assert y.dtype == ms.float16 and y.shape == (1, 2, 3, 5, 5)
    with pytest.raises(TypeError, match="float16"):
        kernel_contracts.conv3d(x.astype(ms.float32), w.astype(ms.float32), None, 1, "pad", (1, 1, 1))
    with pytest.raises(ValueError, match="groups"):
        kernel_contracts.conv3d(x, w, None, 1, "pad", (1, 1, 1), groups=2)


def test_conv3d_layer_on_ascend_matches_cpu(monkeypatch):
    """A full 3-D kernel (not the time-only path) at float32 compute: the layer hands the kernel
    float16, as the policy says the 910 needs, and the result stays within float16 rounding."""
    from svd_ms.modules.layers import Conv3d
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 4, 3, 6, 6)).astype(np.float32)
    cpu = Conv3d(4, 8, 3, padding=1)
    cpu.weight.set_data(Tensor(rng.standard_normal(cpu.weight.shape).astype(np.float32) * 0.1))
    want = cpu(Tensor(x)).asnumpy()
    kernel_contracts.install(monkeypatch)
    layer = Conv3d(4, 8, 3, padding=1)
    assert layer.native_kernel_dtype == ms.float16 and policy.conv3d_lacks_fp32()
    layer.weight.set_data(cpu.weight.data)
    got = layer(Tensor(x))
    assert got.dtype == ms.float32
    from conftest import assert_close
    assert_close("conv3d_on_ascend", got.asnumpy(), want, rel=2e-3)


def test_interpolate_double_follows_the_documented_table():
    x = Tensor(np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4))
    y = kernel_contracts.interpolate(x, scale_factor=(2.0, 2.0), mode="nearest")
    np.testing.assert_array_equal(y.asnumpy(), x.asnumpy().repeat(2, 2).repeat(2, 3))
    with pytest.raises(ValueError, match="not in the table"):
        kernel_contracts.interpolate(x, scale_factor=(2.0, 2.0), mode="trilinear")
    with pytest.raises(ValueError, match="exactly one"):
        kernel_contracts.interpolate(x, size=(8, 8), scale_factor=(2.0, 2.0))
