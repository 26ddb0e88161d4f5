"""Router: which counterpart instance a message goes to, and why it parks when none can take it."""

from __future__ import annotations

import pytest

from gateway.pipeline.accept import MATRIX_SOURCE
from gateway.pipeline.routing import Route, Router
from tests.unit.builders import MAPPINGS, case_registered, referral_accepted, referral_requested

ROUTER = Router(MAPPINGS)
PROBATION = Route("probation", "probation")


@pytest.mark.parametrize(("region", "instance"), [("KZ-35", "mio-kz-35"), ("KZ-71", "mio-kz-71"),
                                                  ("KZ-75", "mio-kz-75")])
def test_a_referral_goes_to_the_instance_serving_the_case_region(region: str, instance: str) -> None:
    routes = ROUTER.routes(referral_requested(kind="shelter.placement"), region=region, source="probation")
    assert routes == [Route("mio", instance)]


def test_a_counterpart_serving_every_region_takes_any_region() -> None:
    routes = ROUTER.routes(referral_requested(kind="document.restore"), region="KZ-71", source="probation")
    assert routes == [Route("con", "con")]


def test_an_unknown_region_parks_with_its_reason() -> None:
    (route,) = ROUTER.routes(referral_requested(kind="shelter.placement"), region="KZ-99", source="probation")
    assert route == Route("mio", None, "no mio service instance serves region KZ-99")


def test_a_referral_for_an_unregistered_case_parks_with_its_reason() -> None:
    (route,) = ROUTER.routes(referral_requested(kind="employment.track"), region=None, source="probation")
    assert route.counterpart == "mtszn"
    assert route.instance is None
    assert route.reason == "the case is not registered yet: no case.registered received"


def test_replies_go_to_probation() -> None:
    assert ROUTER.routes(referral_accepted(), region="KZ-35", source="mio-kz-35") == [PROBATION]


def test_matrix_referrals_also_tell_probation() -> None:
    routes = ROUTER.routes(referral_requested(kind="shelter.placement"), region="KZ-35", source=MATRIX_SOURCE)
    assert routes == [Route("mio", "mio-kz-35"), PROBATION]


def test_a_parked_matrix_referral_still_tells_probation() -> None:
    parked, told = ROUTER.routes(referral_requested(kind="shelter.placement"), region=None, source=MATRIX_SOURCE)
    assert parked.instance is None and parked.reason is not None
    assert told == PROBATION


def test_a_case_registration_is_only_stored() -> None:
    assert ROUTER.routes(case_registered(), region="KZ-35", source="probation") == []


def test_a_counterpart_with_no_instance_parks_with_its_reason() -> None:
    counterparts = MAPPINGS.counterparts.model_copy(update={
        "instances": tuple(i for i in MAPPINGS.counterparts.instances if i.counterpart != "probation")})
    router = Router(MAPPINGS.model_copy(update={"counterparts": counterparts}))
    assert router.routes(referral_accepted(), region="KZ-35") == [
        Route("probation", None, "no probation service instance is configured")]
