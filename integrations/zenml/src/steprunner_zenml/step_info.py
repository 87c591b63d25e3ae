"""ZenML's `StepRunInfo` → the runner's step info (`runner schema step-info`).

The step info never holds environment values: those go to `runner` through its
process environment (see `step_environment`).
"""

import json
import os
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Set, Tuple

if TYPE_CHECKING:
    from zenml.config.step_run_info import StepRunInfo


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> Dict[str, Any]:
    """`over` on top of `base`; nested mappings are merged, everything else replaced."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def read_requirements(path: str, _seen: Optional[Set[str]] = None) -> List[str]:
    """Requirement strings from a pip requirements file; `-r FILE` includes are followed.

    Other pip options (`--index-url`, `-e`, …) are refused: a flavor passes requirements
    after `--`, where they would not be options, and an index belongs in the flavor's
    settings.
    """
    seen = _seen if _seen is not None else set()
    real = os.path.realpath(path)
    if real in seen:
        return []
    seen.add(real)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ValueError(f"cannot read requirements file `{path}`: {e}") from e
    out: List[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        for flag in ("-r", "--requirement"):
            if line.startswith(flag + " ") or line.startswith(flag + "="):
                include = line[len(flag) + 1 :].strip()
                out += read_requirements(
                    os.path.join(os.path.dirname(path), include), seen
                )
                break
        else:
            if line.startswith("-"):
                raise ValueError(
                    f"{path}:{number}: pip option `{line}` is not supported in step "
                    "requirements; put indexes and options in the manifest's settings"
                )
            out.append(line)
    return out


def pip_requirements(docker_settings: Any, source_root: str) -> List[str]:
    """The step's pip requirements: `DockerSettings.requirements` (a list, a requirements
    file relative to the source root, or requirement text) and the requirements of its
    `required_integrations`."""
    reqs = docker_settings.requirements
    out: List[str] = []
    if isinstance(reqs, str):
        path = reqs if os.path.isabs(reqs) else os.path.join(source_root, reqs)
        if os.path.isfile(path):
            out += read_requirements(path)
        else:
            out += [r.strip() for r in reqs.splitlines() if r.strip() and not r.strip().startswith("#")]
    elif reqs:
        out += [str(r) for r in reqs]
    if docker_settings.required_integrations:
        from zenml.integrations.registry import integration_registry

        for name in docker_settings.required_integrations:
            out += integration_registry.select_integration_requirements(name)
    # Each once, first occurrence wins.
    return list(dict.fromkeys(out))


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


#: The `DockerSettings` fields the runner's step info carries (or the step's environment).
DOCKER_FIELDS_USED = frozenset(
    {
        "parent_image",
        "requirements",
        "required_integrations",
        "apt_packages",
        "environment",
        "runtime_environment",
    }
)


def ignored_docker_settings(docker: Any) -> List[str]:
    """The `DockerSettings` fields a step set that no manifest receives (no image is
    built from them): said, not silently dropped."""
    return sorted(set(getattr(docker, "model_fields_set", ()) or ()) - DOCKER_FIELDS_USED)


def resources_of(config: Any) -> Dict[str, Any]:
    """A step configuration's `ResourceSettings` as the runner's step info has them."""
    r = config.resource_settings
    return {"cpu_count": r.cpu_count, "gpu_count": r.gpu_count, "memory": r.memory}


def step_info(
    info: "StepRunInfo",
    entrypoint: List[str],
    settings: Mapping[str, Any],
    source_root: str,
) -> Dict[str, Any]:
    """The runner's step info for one ZenML step run.

    Memory stays a string as ZenML wrote it (`"256MB"`); the runner parses it.
    """
    docker = info.config.docker_settings
    return {
        "step": {
            "name": info.pipeline_step_name,
            "pipeline": info.pipeline.name,
            "run_name": info.run_name,
            "run_id": str(info.run_id),
            "step_run_id": str(info.step_run_id),
            "parameters": _jsonable(dict(info.config.parameters or {})),
        },
        "requirements": {
            "pip": pip_requirements(docker, source_root),
            "apt": list(docker.apt_packages or []),
            "parent_image": docker.parent_image,
        },
        "resources": resources_of(info.config),
        "settings": _jsonable(dict(settings)),
        "entrypoint": list(entrypoint),
        "source": source_root,
    }


def step_environment(
    info: "StepRunInfo", environment: Mapping[str, str], source_root: str
) -> Tuple[Dict[str, str], List[str]]:
    """The variables the step gets on top of the caller's, and the names to pass on.

    ZenML's `environment` (store, active stack and project, secrets, the step's own
    variables) wins over `DockerSettings.runtime_environment`, which wins over
    `DockerSettings.environment`. The step also needs the caller's
    ZenML config and local stores (or it would start a fresh store under `$HOME`) and
    the project root on `PYTHONPATH` to import the step's code.
    """
    from zenml.config.global_config import GlobalConfiguration

    env: Dict[str, str] = {}
    docker = info.config.docker_settings
    env.update({k: str(v) for k, v in (docker.environment or {}).items()})
    env.update({k: str(v) for k, v in (getattr(docker, "runtime_environment", None) or {}).items()})
    env.update({k: str(v) for k, v in environment.items()})
    gc = GlobalConfiguration()
    env.setdefault("ZENML_CONFIG_PATH", gc.config_directory)
    env.setdefault("ZENML_LOCAL_STORES_PATH", gc.local_stores_path)
    pythonpath = [source_root] + [
        p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != source_root
    ]
    env.setdefault("PYTHONPATH", os.pathsep.join(pythonpath))
    return env, sorted(env)
