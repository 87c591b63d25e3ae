"""Run last (see conftest): what ZenML and the runner would write in the user's `$HOME`
is as it was before the tests — the ZenML config (and the local stores in it), a ZenML
repository in `$HOME`, and the runner's home (runs and cache). Other
programs on the machine may write elsewhere in `$HOME` meanwhile, so nothing else is
compared."""

import os

from conftest import (
    BEFORE,
    NOT_ROOT,
    REAL_HOME,
    REAL_RUNNER_HOME,
    REAL_ZENML_CONFIG,
    SESSION,
    snapshot,
)


def test_the_users_home_and_zenml_config_are_untouched():
    assert os.environ["HOME"].startswith(str(SESSION)), "the tests did not isolate HOME"
    assert not REAL_ZENML_CONFIG.is_relative_to(SESSION)
    assert snapshot(REAL_ZENML_CONFIG, 6) == BEFORE["zenml_config"], (
        f"the user's ZenML config `{REAL_ZENML_CONFIG}` changed"
    )
    assert snapshot(REAL_RUNNER_HOME, 3) == BEFORE["runner_home"], f"`{REAL_RUNNER_HOME}` changed"
    assert snapshot(REAL_HOME / ".zen", 2) == BEFORE["zen_repo"], "`~/.zen` changed"
    if NOT_ROOT:
        return  # no pipeline ran
    # The tests' own home got what would otherwise have gone to the user's.
    assert (SESSION / "zenml-config" / "config.yaml").is_file()
    assert (SESSION / "runner-home" / "runs").is_dir()
