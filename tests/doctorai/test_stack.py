"""Which models the local stack registers and which inference workers it starts: `doctorai up` every
builtin and a worker per active model; a stack that names its workers (the tests) exactly those."""

from pathlib import Path

from doctorai.cli.up import endpoints
from doctorai.stack import DEFAULT_MODELS, SPINE_MODEL, Ports, StackConfig, builtin_models, inference_workers
from integration.models import registry
from storage.db import make_engine, session_scope
from storage.model_packages import add_model_package



def _registered(config: StackConfig, *names: str) -> None:
    """Register a version 1 of each model and activate it, as `doctorai up` does on a first start."""
    engine = make_engine(config.storage_settings().resolved_database_url())
    with session_scope(engine) as session:
        for name in names:
            add_model_package(session, name=name, version="1", framework="onnx", manifest="{}")
            registry.activate_first(session, name=name, version="1")
    engine.dispose()


def test_up_registers_every_builtin_and_a_stack_naming_its_workers_only_theirs(tmp_path: Path) -> None:
    """The four routing rules a fresh install seeds each find their model (issue 16)."""
    up = StackConfig(var_dir=tmp_path)
    assert builtin_models(up) == DEFAULT_MODELS
    assert set(DEFAULT_MODELS) == {"chest-xray-pneumonia", "brain-extraction", "report-triage", "modality-check"}
    assert builtin_models(StackConfig(var_dir=tmp_path, models=("brain-extraction",))) == (SPINE_MODEL, "brain-extraction")
    assert builtin_models(StackConfig(var_dir=tmp_path, models=())) == (SPINE_MODEL,)


def test_up_starts_a_worker_for_each_active_model_and_none_for_a_deactivated_one(db_url: str, tmp_path: Path) -> None:
    config = StackConfig(var_dir=tmp_path, database_url=db_url, ports=Ports())
    _registered(config, "chest-xray-pneumonia", "brain-extraction", "report-triage", "site-model")
    engine = make_engine(db_url)
    with session_scope(engine) as session:
        registry.deactivate(session, name="report-triage", version="1")  # an admin's choice
    engine.dispose()

    workers = inference_workers(config)
    # Sorted by name; the first on the inference metrics port, the others on the next ones no
    # other process of the stack uses (9105 is the MLLP listener's).
    assert workers == {"brain-extraction": 9104, "chest-xray-pneumonia": 9106, "site-model": 9107}
    printed = endpoints(config, workers)
    assert "inference workers      brain-extraction (metrics :9104), chest-xray-pneumonia (metrics :9106)" in printed
    assert "report-triage" not in printed


def test_a_stack_that_names_its_workers_starts_those(tmp_path: Path) -> None:
    config = StackConfig(var_dir=tmp_path, ports=Ports(), models=("modality-check",))
    assert inference_workers(config) == {"modality-check": 9104}
    assert inference_workers(StackConfig(var_dir=tmp_path, models=())) == {}
    assert "none: no model has an active version" in endpoints(config, {})
