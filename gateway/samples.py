"""Sample traffic shaped by the white paper's survey (N=200, Karaganda region): for demo, tests and bench."""

from __future__ import annotations

import random
import uuid
from datetime import date, datetime, timedelta, timezone
from typing import Any, Iterator

from gateway.canonical.iin import iin_check_digit

SURNAMES = ["Ахметова", "Жұмабекова", "Иванова", "Сәрсенбаева", "Қасымова", "Нұрланова", "Ким", "Өтегенова",
            "Ёлкина", "Үсенова", "Ғабитова", "Шәріпова", "Байғожина", "Һасенова"]
GIVEN = ["Айгүл", "Гүлнар", "Мария", "Әсел", "Жанар", "Ольга", "Дана", "Ұлжан", "Салтанат", "Қарлығаш", "Аңсаған",
         "Ирина", "Өмірзая"]
PATRONYMIC = ["Серікқызы", "Ивановна", "Болатқызы", None, "Нұрланқызы", "Петровна", None]
REGIONS = [("KZ-35", 0.5), ("KZ-71", 0.25), ("KZ-75", 0.25)]  # pilot: three regions of different profiles
AGE_BANDS = [((21, 30), 0.28), ((31, 40), 0.44), ((41, 50), 0.20), ((18, 60), 0.08)]


def _weighted(rng: random.Random, options: list[tuple[Any, float]]) -> Any:
    return rng.choices([o for o, _ in options], weights=[w for _, w in options])[0]


def make_iin(rng: random.Random, birth: date, *, female: bool = True) -> str:
    century = 4 if birth.year < 2000 else 6
    if not female:
        century -= 1
    while True:
        first11 = f"{birth:%y%m%d}{century}{rng.randrange(10000):04d}"
        check = iin_check_digit(first11)
        if check is not None:
            return first11 + str(check)


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


class SampleCases:
    """Deterministic for a seed: case registrations and, for the housing barrier (42%), shelter referrals."""

    def __init__(self, seed: int = 2026, *, now: datetime | None = None) -> None:
        self.rng = random.Random(seed)
        self.now = now
        self.counter = 0

    def _now(self) -> datetime:
        return self.now or datetime.now(timezone.utc)

    def case(self) -> list[dict[str, Any]]:
        rng = self.rng
        self.counter += 1
        now = self._now()
        lo, hi = _weighted(rng, AGE_BANDS)
        birth = date(now.year - rng.randint(lo, hi), rng.randint(1, 12), rng.randint(1, 28))
        region = _weighted(rng, REGIONS)
        case_id = f"{region[3:]}-{now.year}-{rng.randrange(10**6):06d}-{self.counter}"
        occurred = now.astimezone(timezone(timedelta(hours=5)))
        person: dict[str, Any] = {
            "iin": make_iin(rng, birth),
            "surname": rng.choice(SURNAMES),
            "given_name": rng.choice(GIVEN),
            "birth_date": birth.isoformat(),
            "sex": "female",
        }
        patronymic = rng.choice(PATRONYMIC)
        if patronymic:
            person["patronymic"] = patronymic
        messages = [{
            "message_id": _uuid(rng),
            "type": "case.registered",
            "case_id": case_id,
            "occurred_at": occurred.isoformat(),
            "body": {"region": region, "person": person, "release_date": (now.date() - timedelta(days=rng.randint(0, 20))).isoformat(),
                     "has_minor_children": rng.random() < 0.72},
        }]
        if rng.random() < 0.42:
            messages.append(self.shelter_referral(case_id, occurred=occurred))
        return messages

    def risks(self, case: dict[str, Any]) -> list[dict[str, Any]]:
        """risk.detected messages for a registered case, at the survey's barrier and help-request rates."""
        rng = self.rng
        occurred = datetime.fromisoformat(case["occurred_at"])
        drawn = [
            ("economic", "no_income", 0.68, "R2"),
            ("housing", rng.choice(["homeless", "lives_with_aggressor", "exploitation_risk"]), 0.42, "R3"),
            ("legal", rng.choice(["no_documents", "no_registration"]), 0.35, "R2"),
            ("medical", "high_medical_need", 0.65, "R2"),  # psychological help requested
            ("medical", "no_phc_attachment", 0.42, "R1"),
        ]
        out = []
        for n, (domain, trigger, share, level) in enumerate(drawn):
            if rng.random() < share:
                out.append({
                    "message_id": _uuid(rng),
                    "type": "risk.detected",
                    "case_id": case["case_id"],
                    "occurred_at": (occurred + timedelta(seconds=n + 1)).isoformat(),
                    "body": {"risk_id": f"R-{rng.randrange(10**9):09d}", "domain": domain, "level": level,
                             "trigger": trigger},
                })
        return out

    def shelter_referral(self, case_id: str, *, occurred: datetime | None = None) -> dict[str, Any]:
        occurred = occurred or self._now().astimezone(timezone(timedelta(hours=5)))
        return {
            "message_id": _uuid(self.rng),
            "type": "referral.requested",
            "case_id": case_id,
            "occurred_at": occurred.isoformat(),
            "body": {"referral_id": f"REF-{self.rng.randrange(10**9):09d}", "kind": "shelter.placement",
                     "risk_id": f"R-{self.rng.randrange(10**6)}"},
        }

    def stream(self) -> Iterator[dict[str, Any]]:
        while True:
            yield from self.case()
