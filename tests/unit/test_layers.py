"""The folders show the architecture: imports point one way, and the domain stays plain.

    domain  <-  storage  <-  voice  <-  desk  <-  helpdesk     sim drives the app from outside

Top-level modules of ``ivr`` are of two kinds. The cross-cutting ones (``CROSS_CUTTING``:
configuration, security, metrics, the ``ivr()`` accessor, HTTP deadlines) may be used by
every layer and import no layer above the domain. The outer ones (the commands and their registration, the
sender, health, the web front, privacy, queues) use the layers, and no layer imports them.
The app factory in ``ivr/__init__.py`` is the one place that wires every layer together.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "ivr"

# What each layer may import from inside ``ivr`` (besides itself and the cross-cutting
# top-level modules named in CROSS_CUTTING).
ALLOWED = {
    "domain": set(),
    "storage": {"domain"},
    "voice": {"domain", "storage"},
    # The desk places callbacks through the voice line's webhooks (their paths).
    "desk": {"domain", "storage", "voice"},
    # Zendesk's webhook is one more client of the desk's rules (as the JSON API is).
    "helpdesk": {"domain", "storage", "voice", "desk"},
    # Outside the app: it drives it through HTTP or WSGI, and sets up engineers as an
    # operator would. No layer imports it.
    "sim": {"desk"},
}
# Cross-cutting modules any layer may use; they import no layer above the domain.
CROSS_CUTTING = {"config", "security", "metrics", "extension", "deadline"}
FRAMEWORKS = ("flask", "twilio", "sqlalchemy", "alembic", "werkzeug", "jinja2")


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        if "migrations" in path.parts:
            continue  # Alembic's scripts: they name the models of their own time
        yield path


def _internal_imports(path: Path) -> list[str]:
    """The ``ivr`` modules ``path`` imports, as dotted names (``ivr.storage``, ``ivr.metrics``)."""
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    package = list(relative.parts[:-1])
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            if not (module == "ivr" or module.startswith("ivr.")):
                continue
            if node.module is None:  # from .. import metrics
                names += [f"{module}.{alias.name}" for alias in node.names]
            else:
                names.append(module)
        elif isinstance(node, ast.Import):
            names += [a.name for a in node.names if a.name == "ivr" or a.name.startswith("ivr.")]
    return names


def _external_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
    return found


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ALLOWED else None


def _is_type_checking_only(path: Path, target: str) -> bool:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            for inner in ast.walk(node):
                if isinstance(inner, ast.ImportFrom) and inner.module and target.endswith(inner.module):
                    return True
    return False


LAYERED = [p for p in _modules() if _layer("ivr." + ".".join(p.relative_to(PACKAGE).parts))]


@pytest.mark.parametrize("path", LAYERED, ids=lambda p: str(p.relative_to(PACKAGE.parent)))
def test_a_layer_imports_only_the_layers_below_it_and_the_cross_cutting_modules(path):
    own = path.relative_to(PACKAGE).parts[0]
    wrong = []
    for module in _internal_imports(path):
        layer = _layer(module)
        if layer is None:
            top = module.split(".")[1] if "." in module else ""
            if top not in CROSS_CUTTING and module != "ivr":
                wrong.append(module)
        elif layer != own and layer not in ALLOWED[own]:
            wrong.append(module)
    assert not wrong, f"{path.relative_to(PACKAGE.parent)} imports upward or sideways: {wrong}"


DOMAIN = sorted((PACKAGE / "domain").glob("*.py"))


@pytest.mark.parametrize("path", DOMAIN, ids=lambda p: p.name)
def test_the_domain_imports_no_web_telephony_or_database_framework(path):
    assert not _external_imports(path) & set(FRAMEWORKS), path.name


CROSS = [PACKAGE / f"{name}.py" for name in sorted(CROSS_CUTTING)]


@pytest.mark.parametrize("path", CROSS, ids=lambda p: p.name)
def test_cross_cutting_modules_import_no_layer_above_the_domain(path):
    wrong = [m for m in _internal_imports(path)
             if _layer(m) not in (None, "domain") and not _is_type_checking_only(path, m)]
    assert not wrong, f"{path.name} imports {wrong}"


def test_the_app_module_only_creates_the_app():
    tree = ast.parse((PACKAGE.parent / "app.py").read_text(encoding="utf-8"))
    statements = [node for node in tree.body if not isinstance(node, ast.Expr)]
    assert [type(node).__name__ for node in statements] == ["ImportFrom", "Assign"]
    assert statements[0].module == "ivr" and [a.name for a in statements[0].names] == ["create_app"]


def test_the_layer_rule_catches_an_upward_import(tmp_path, monkeypatch):
    """The check itself can fail: a domain module importing the storage layer is caught."""
    fake = tmp_path / "ivr"
    (fake / "domain").mkdir(parents=True)
    bad = fake / "domain" / "bad.py"
    bad.write_text("from ..storage.calls import CallRepository\n", encoding="utf-8")
    monkeypatch.setattr(__import__(__name__, fromlist=["PACKAGE"]), "PACKAGE", fake)
    with pytest.raises(AssertionError, match="imports upward"):
        test_a_layer_imports_only_the_layers_below_it_and_the_cross_cutting_modules(bad)
