"""Every activity has one typed contract and one registered function, and nothing else is
registered: forgetting the function, naming it otherwise than its contract, or giving it an
untyped payload is caught here (and at import), not as a run stuck on an activity the host does
not know."""

from __future__ import annotations

from typing import Any

import pytest

from activities.wrapper import activity, contract_of
from core.contracts import CONTRACTS, Activity, ActivityInput, SubmitFinetune


def test_every_activity_is_registered_and_nothing_else(activity_functions: dict[str, Any]) -> None:
    assert sorted(activity_functions) == sorted(a.value for a in Activity)


def test_every_activity_has_one_input_model() -> None:
    assert set(CONTRACTS) == set(Activity)
    for member, model in CONTRACTS.items():
        assert model.activity is member


def test_each_registered_function_takes_its_own_contract(activity_functions: dict[str, Any]) -> None:
    for name, fn in activity_functions.items():
        assert contract_of(fn.__wrapped__) is CONTRACTS[Activity(name)]


def test_a_function_named_otherwise_than_its_contract_is_refused() -> None:
    def submit_the_job(inp: SubmitFinetune) -> str:  # a typo of submit_finetune
        return ""

    with pytest.raises(ValueError, match=r"'submit_the_job'.*SubmitFinetune.*'submit_finetune'"):
        activity(submit_the_job)


def test_an_untyped_payload_is_refused() -> None:
    def submit_finetune(payload: dict[str, Any]) -> str:
        return ""

    with pytest.raises(TypeError, match=r"annotated with its input model"):
        activity(submit_finetune)


def test_a_second_input_model_for_one_activity_is_refused() -> None:
    with pytest.raises(TypeError, match=r"submit_finetune has two input models"):

        class AnotherSubmit(ActivityInput[str]):
            activity = Activity.SUBMIT_FINETUNE


def test_the_output_is_parsed_by_the_contract() -> None:
    from core.contracts import GetDeploymentState
    from core.models import ProvisioningState

    assert GetDeploymentState.parse_output("Succeeded") is ProvisioningState.SUCCEEDED
    with pytest.raises(ValueError):
        GetDeploymentState.parse_output("Sideways")
