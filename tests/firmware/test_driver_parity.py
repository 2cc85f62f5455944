"""Parity: every place that knows a sensor driver agrees with its declaration (BOARD in
firmware/drivers/*.py, read by boards/drivers.py): the board schema, the node's bring-up,
the kinds' channel names and units, and the simulator's fakes. Also: the node kinds and
the QC flags are defined once."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

from boards import DRIVERS, KINDS, list_boards, load_board
from boards.drivers import FIRMWARE, declarations, kind_names, kind_units, module_literals

fakes: Any = __import__("host_tools.sim.models.fakes", fromlist=["fakes"])


def _class(module: str, name: str) -> ast.ClassDef:
    tree = ast.parse((FIRMWARE / "drivers" / f"{module}.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            return node
    raise AssertionError(f"firmware/drivers/{module}.py declares class {name}, which it lacks")


def _members(cls: ast.ClassDef) -> dict[str, ast.stmt]:
    out: dict[str, ast.stmt] = {}
    for node in cls.body:
        if isinstance(node, ast.FunctionDef):
            out[node.name] = node
        elif isinstance(node, ast.Assign):
            out.update({t.id: node for t in node.targets if isinstance(t, ast.Name)})
    return out


def _bases(module: str, cls: ast.ClassDef) -> dict[str, ast.stmt]:
    members = {}
    for base in cls.bases:
        if isinstance(base, ast.Name):
            members.update(_members(_class(module, base.id)))
    return {**members, **_members(cls)}


def test_each_declared_class_takes_its_arguments() -> None:
    problems = []
    for name, d in declarations().items():
        members = _bases(d.module, _class(d.module, d.cls))
        init = members.get("__init__")
        assert isinstance(init, ast.FunctionDef), f"{d.cls} has no __init__"
        params = [a.arg for a in init.args.args[1:]]
        positional = (1 if d.bus else 0) + sum(1 for a in d.args if a.passed and not a.keyword)
        if positional > len(params):
            problems.append(f"{name}: {positional} positional arguments, {d.cls}() takes {params}")
        for a in d.args:
            if a.keyword and a.keyword not in params:
                problems.append(f"{name}: {d.cls}() has no parameter {a.keyword!r}")
    assert not problems, "\n".join(problems)


def test_board_schema_is_the_declarations() -> None:
    declared = {n: d for n, d in declarations().items() if n != "battery"}
    assert set(DRIVERS) == set(declared)
    for name, d in declared.items():
        bus, required, optional, _ = DRIVERS[name]
        assert bus == d.bus, name
        assert set(required) | set(optional) == set(d.keys), name
    for board in list_boards():
        b = load_board(board)
        for kind, entries in b["sensors"].items():
            for e in entries:
                d = declarations()[e["driver"]]
                if d.bus:
                    assert b["buses"][e["bus"]]["type"] == d.bus, (board, e)
                assert e["driver"] in kind_names(kind), (
                    f"{board}: the {kind} node has no channel names for driver {e['driver']}"
                )


def _names_in(test: ast.expr) -> set[str]:
    return {
        n.value for n in ast.walk(test) if isinstance(n, ast.Constant) and isinstance(n.value, str)
    }


def _bring_up_branches() -> dict[str, tuple[str, dict[str, Any]]]:
    """node/board.py's driver dispatch: board driver name -> ("module.Class", {key: default})
    from each `if d == ...` branch of driver() and from battery()."""
    tree = ast.parse((FIRMWARE / "node" / "board.py").read_text())
    fns = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    found: dict[str, tuple[str, dict[str, Any]]] = {}

    def branch(body: list[ast.stmt]) -> tuple[str, dict[str, Any]]:
        path, keys = "", {}
        for node in ast.walk(ast.Module(body=body, type_ignores=[])):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                if node.func.id == "_cls":
                    path = ast.literal_eval(node.args[0])
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                if node.func.attr == "get" and isinstance(node.func.value, ast.Name):
                    if node.func.value.id in ("s", "spec") and len(node.args) == 2:
                        keys[ast.literal_eval(node.args[0])] = ast.literal_eval(node.args[1])
            if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name):
                if node.value.id in ("s", "spec") and isinstance(node.slice, ast.Constant):
                    keys.setdefault(node.slice.value, None)
            if isinstance(node, ast.Compare) and isinstance(node.left, ast.Constant):
                keys.setdefault(node.left.value, None)  # "set_pin" in s
        return path.removeprefix("drivers."), keys

    for stmt in fns["driver"].body:
        if isinstance(stmt, ast.If):
            for name in _names_in(stmt.test):
                found[name] = branch(stmt.body)
    found["battery"] = branch(fns["battery"].body)
    return found


def test_node_bring_up_builds_each_declared_driver_as_declared() -> None:
    branches = _bring_up_branches()
    assert set(branches) == set(declarations()), "node/board.py driver() names other drivers"
    problems = []
    for name, d in declarations().items():
        path, keys = branches[name]
        if path != f"{d.module}.{d.cls}":
            problems.append(f"{name}: node/board.py builds {path}, declared {d.module}.{d.cls}")
        for key, default in keys.items():
            if key in ("driver", "bus"):
                continue
            arg = d.keys.get(key)
            if arg is None:
                problems.append(f"{name}: node/board.py reads {key!r}, which is not declared")
            elif default is not None and arg.default is not None and default != arg.default:
                problems.append(
                    f"{name}: {key} defaults to {default} on the node, {arg.default} declared"
                )
    # temperature sensors first (an ultrasonic ranger compensates with the one read before)
    tree = ast.parse((FIRMWARE / "node" / "board.py").read_text())
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "sensors")
    first = set().union(*(_names_in(n.test) for n in ast.walk(fn) if isinstance(n, ast.If)))
    first.discard("driver")  # s.get("driver")
    assert first == {n for n, d in declarations().items() if d.gives_temp}, first
    assert not problems, "\n".join(problems)


def test_kinds_channel_names_and_units_match_the_declared_values() -> None:
    problems = []
    for kind in KINDS:
        units = kind_units(kind)
        for drv, names in kind_names(kind).items():
            d = declarations().get(drv)
            if d is None:
                problems.append(f"{kind}: NAMES has {drv!r}, which no driver declares")
                continue
            extra = 1 if d.takes_temp else 0
            if d.gives_temp != (d.values[0][0] == "temp"):
                problems.append(f"{drv}: temp field and VALUES disagree on giving the temperature")
            if d.takes_temp and len(d.values) != 1:
                problems.append(f"{drv}: compensated (temp 1) but gives {len(d.values)} values")
            if len(names) > len(d.values) + extra:
                problems.append(f"{kind}: {drv} gives {len(d.values)} values, NAMES has {names}")
            for i, channel in enumerate(names):
                if channel is None:
                    continue
                unit = d.values[i][1] if i < len(d.values) else "Cel"  # the compensating temp
                got = units.get(channel, (None,))[0]
                if got != unit:
                    problems.append(f"{kind}: {drv} value {i} -> {channel}: unit {got}, not {unit}")
    assert not problems, "\n".join(problems)


def test_simulator_has_a_fake_per_driver_module_speaking_its_bus() -> None:
    from host_tools.sim.simnode import FAKES, SimClock, SimHardware

    modules = {d.module for d in declarations().values()}
    assert set(FAKES) == modules
    board = load_board("sim-battery")
    entries = [e for kind in KINDS for e in board["sensors"][kind]]
    entries.append({"driver": "pressure", "name": "p", "adc_pin": 36})
    entries.append({"driver": "hc-sr04", "name": "r", "trigger_pin": 4, "echo_pin": 5})
    hw = SimHardware(board, "air", model=None, clock=SimClock(1.0, None), seed=1)
    for i, e in enumerate(entries):
        d = declarations()[e["driver"]]
        fake = hw._make(e, i)
        if d.bus == "uart":
            assert isinstance(fake, fakes._UARTFake), (e["driver"], type(fake))
        elif d.bus == "i2c":  # a device on the simulated I2C bus (fakes.I2CBus)
            assert hasattr(fake, "on_read") and hasattr(fake, "on_write"), type(fake)
        else:
            assert isinstance(fake, (fakes.FakeRanger, fakes.FakeADC)), type(fake)


def test_kinds_and_qc_flags_are_defined_once() -> None:
    from calibration.qc import Flag
    from edge_gateway import processing

    assert KINDS == module_literals(FIRMWARE / "node" / "config.py")["KINDS"]
    for kind in KINDS:
        assert (FIRMWARE / "node" / f"{kind}.py").exists()
    assert (processing.GOOD, processing.FAIL, processing.MISSING) == (
        Flag.GOOD,
        Flag.FAIL,
        Flag.MISSING,
    )
    repo = Path(__file__).resolve().parents[2]
    for pkg in ("edge_gateway", "host_tools", "calibration", "city_platform", "bench"):
        for path in (repo / pkg).rglob("*.py"):
            text = path.read_text()
            assert '("air", "water", "parking")' not in text, f"{path}: use boards.KINDS"
