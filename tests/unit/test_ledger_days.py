"""Which ledger day a message is filed under, and which days the retention keeps."""

from __future__ import annotations

import secrets
from datetime import date

import pytest

from login_etl import ledger
from login_etl.ledger.days import with_day
from login_etl.masking import Masker
from login_etl.messages import Received
from login_etl.redrive import _redrive_id
from login_etl.settings import MaskingKey

DAY_MS = 86_400_000


def test_the_day_is_the_utc_day_of_sent_timestamp() -> None:
    assert Received("m", "r", "{}", 20_000 * DAY_MS).day == 20_000
    assert Received("m", "r", "{}", 20_001 * DAY_MS - 1).day == 20_000
    assert Received("m", "r", "{}", 20_001 * DAY_MS - 1, redrive_day=19_990).day == 19_990


def test_a_sealed_id_carries_its_day_and_old_seals_still_open() -> None:
    masker = Masker([MaskingKey("k", secrets.token_bytes(32))])
    assert with_day(masker.unseal(masker.seal("abc|20000"))) == ("abc", 20_000)
    assert with_day(masker.unseal(masker.seal("abc"))) == ("abc", None)
    assert with_day("redrive:abc|20000") == ("redrive:abc", 20_000)
    assert with_day("a|b") == ("a|b", None)
    assert with_day("|20000") == ("|20000", None)
    assert with_day(None) == (None, None)


def test_a_redriven_copy_is_filed_under_its_origins_day() -> None:
    dlq_copy = Received("dlq-id", "r", "{}", 20_005 * DAY_MS, origin="orig", origin_day=20_000)
    assert _redrive_id(dlq_copy) == "redrive:orig|20000"
    # a hand-off sealed before days were carried: the DLQ copy's own day, the same each time
    old = Received("dlq-id", "r", "{}", 20_005 * DAY_MS, origin="orig")
    assert _redrive_id(old) == "redrive:orig|20005"
    # a message SQS moved itself keeps its id and its SentTimestamp
    moved = Received("sqs-id", "r", "{}", 20_003 * DAY_MS + 5)
    assert _redrive_id(moved) == "sqs-id|20003"


@pytest.mark.parametrize(("seconds", "days"), [
    (60, 2), (86_400, 2), (86_401, 3), (345_600, 5), (1_209_600, 15), (None, 15)])
def test_days_kept_are_the_queues_retention_rounded_up_plus_one(seconds: int | None,
                                                               days: int) -> None:
    assert ledger.keep_days(seconds) == days


def test_a_day_is_dropped_a_full_day_after_its_last_possible_redelivery() -> None:
    """Retention 4 days: a message sent at the end of day d can come back until d + 1 + 4;
    its day goes one whole day after that, not sooner."""
    today = 20_010
    keep = ledger.keep_days(4 * 86_400)
    days = set(range(19_990, today + 3))
    dropped = ledger.droppable(days, today, keep)
    for d in days:
        assert (d in dropped) == (d + 1 + 4 + 1 <= today), d


def test_partition_names_follow_the_date() -> None:
    assert ledger.partition_name(ledger.epoch_day(date(2026, 12, 1))) == (
        "login_etl_ledger_p20261201")
    assert ledger.from_epoch_day(ledger.epoch_day(date(2026, 12, 1))) == date(2026, 12, 1)


def test_a_day_is_packable_a_day_and_an_hour_after_it_ended() -> None:
    assert ledger.PACK_AFTER_SECONDS == 25 * 3600
    end_of_day_1 = 2 * 86_400
    assert ledger.packable({0, 1, 2}, end_of_day_1 + ledger.PACK_AFTER_SECONDS - 1) == [0]
    assert ledger.packable({0, 1, 2}, end_of_day_1 + ledger.PACK_AFTER_SECONDS) == [0, 1]
    assert ledger.packable(set(), 10 * 86_400) == []


def test_partition_names_read_back_as_their_days() -> None:
    day = ledger.epoch_day(date(2026, 12, 1))
    assert ledger.partition_name(day) == "login_etl_ledger_p20261201"
    assert ledger.packed_name(day) == "login_etl_ledger_packed_p20261201"
    assert ledger.day_of(ledger.partition_name(day)) == day
    assert ledger.day_of(ledger.packed_name(day), ledger.PACKED) == day
    for other in ("login_etl_ledger_packed_p20261201", "login_etl_ledger_default",
                  "login_etl_ledger_p2026120", "login_etl_ledger_p202612011",
                  "x_login_etl_ledger_p20261201", "login_etl_ledger_legacy"):
        assert ledger.day_of(other) is None, other
    assert ledger.day_of("login_etl_ledger_p20261201", ledger.PACKED) is None
