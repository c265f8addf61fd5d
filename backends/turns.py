"""`TurnStore` on blob storage: one JSON blob per endpoint (`_turns/<endpoint>.json` in the
datasets container), changed only with ETag conditions, so two runs asking at once cannot both
get the turn (core/turns.py decides, the conditional write makes it atomic).

The blob trigger ignores it (not a `.jsonl`), and the identity that writes run reports there
needs no other permission.
"""

from __future__ import annotations

from datetime import UTC, datetime

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.storage.blob import BlobClient, BlobServiceClient

from core.turns import Turn, TurnAnswer, give_back, take

PREFIX = "_turns/"
MAX_RACES = 20  # conditional writes lost in a row before giving up (the activity is retried)


class TurnRaceLost(RuntimeError):
    """Other writers changed the turn record every time we tried: transient, retry."""


class BlobTurnStore:
    def __init__(self, service: BlobServiceClient, container: str) -> None:
        self.service = service
        self.container = container

    def _blob(self, endpoint: str) -> BlobClient:
        return self.service.get_blob_client(self.container, f"{PREFIX}{endpoint}.json")

    def _read(self, endpoint: str) -> tuple[Turn | None, str | None]:
        try:
            download = self._blob(endpoint).download_blob()
        except ResourceNotFoundError:
            return None, None
        return Turn.model_validate_json(download.readall()), download.properties.etag

    def current(self, endpoint: str) -> Turn | None:
        return self._read(endpoint)[0]

    def take(self, endpoint: str, run: str, ttl_s: float) -> TurnAnswer:
        for _ in range(MAX_RACES):
            current, etag = self._read(endpoint)
            answer, record = take(current, run, datetime.now(UTC), ttl_s)
            if record is None:
                return answer
            data = record.model_dump_json().encode()
            try:
                if etag is None:
                    self._blob(endpoint).upload_blob(data, overwrite=False)
                else:
                    self._blob(endpoint).upload_blob(
                        data, overwrite=True, etag=etag, match_condition=MatchConditions.IfNotModified
                    )
            except (ResourceExistsError, ResourceModifiedError):
                continue  # someone else wrote first: decide again on what they wrote
            return answer
        raise TurnRaceLost(f"the release turn of {endpoint} kept changing; try again")

    def give_back(self, endpoint: str, run: str) -> bool:
        for _ in range(MAX_RACES):
            current, etag = self._read(endpoint)
            if not give_back(current, run):
                return False
            try:
                self._blob(endpoint).delete_blob(etag=etag, match_condition=MatchConditions.IfNotModified)
            except ResourceNotFoundError:
                return False
            except ResourceModifiedError:
                continue
            return True
        raise TurnRaceLost(f"the release turn of {endpoint} kept changing; try again")
