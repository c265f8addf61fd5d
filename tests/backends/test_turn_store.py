"""The release turn's store on a real blob service (Azurite): many runs asking at once get one
turn; only the holder gives it back; an expired turn goes to the next asker."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest
from azure.storage.blob import BlobServiceClient

from backends.turns import BlobTurnStore


@pytest.fixture
def store(blob_service: BlobServiceClient) -> Iterator[BlobTurnStore]:
    container = f"turns-{uuid.uuid4().hex[:8]}"
    blob_service.create_container(container)
    yield BlobTurnStore(blob_service, container)
    blob_service.delete_container(container)


def test_many_runs_asking_at_once_get_one_turn(store: BlobTurnStore) -> None:
    runs = [f"ft-{i:016x}" for i in range(8)]
    answers: dict[str, bool] = {}
    start = threading.Barrier(len(runs))

    def ask(run: str) -> None:
        start.wait()
        answers[run] = store.take("phi3-ft-endpoint", run, ttl_s=600).granted

    threads = [threading.Thread(target=ask, args=(r,)) for r in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    winners = [r for r, granted in answers.items() if granted]
    assert len(winners) == 1
    current = store.current("phi3-ft-endpoint")
    assert current is not None and current.holder == winners[0]


def test_only_the_holder_gives_the_turn_back(store: BlobTurnStore) -> None:
    assert store.take("ep", "ft-a", ttl_s=600).granted
    refused = store.take("ep", "ft-b", ttl_s=600)
    assert not refused.granted and refused.holder == "ft-a"
    assert store.give_back("ep", "ft-b") is False
    assert store.take("ep", "ft-a", ttl_s=600).granted  # a renewal
    assert store.give_back("ep", "ft-a") is True
    assert store.current("ep") is None
    assert store.give_back("ep", "ft-a") is False  # twice: no error
    assert store.take("ep", "ft-b", ttl_s=600).granted


def test_an_expired_turn_goes_to_the_next_asker(store: BlobTurnStore) -> None:
    assert store.take("ep", "ft-a", ttl_s=0).granted  # expires at once: a vanished holder
    answer = store.take("ep", "ft-b", ttl_s=600)
    assert answer.granted and store.current("ep").holder == "ft-b"  # type: ignore[union-attr]
    assert store.give_back("ep", "ft-a") is False  # the old holder cannot end the new turn
