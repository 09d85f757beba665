"""
Schemathesis hooks of Crema's serving fuzz suite (`hooks = "hooks"` in schemathesis.toml;
hack/fuzz/schemathesis.ts puts this folder on PYTHONPATH). Test tool only: nothing here ships.

1. Real ids. Random strings almost never name a published user, store or menu item, so without
   help the fuzzer would only ever see 404s and validation errors. Half of the id-shaped values
   (a quarter for erase, which destroys what it names) are swapped for ids from the features the
   test published (CREMA_FUZZ_IDS, a JSON file), so the model-backed answers get fuzzed too;
   half the event ids are made fresh, so events reach the stream instead of the duplicate check.
2. Loopback only. An admin model URI with a host is pointed at 127.0.0.1 so the serving process
   never fetches from another machine, whatever the fuzzer makes up.
"""
import json
import os
import random
from datetime import datetime, timedelta, timezone
from urllib.parse import urlsplit, urlunsplit

import schemathesis

with open(os.environ["CREMA_FUZZ_IDS"], encoding="utf-8") as f:
    IDS = json.load(f)

RNG = random.Random(int(os.environ.get("CREMA_FUZZ_SEED", "1")))


def maybe(p: float) -> bool:
    return RNG.random() < p


def real(kind: str) -> str:
    return RNG.choice(IDS[kind])


def swap_field(obj, key: str, kind: str, p: float = 0.5) -> None:
    if isinstance(obj, dict) and isinstance(obj.get(key), str) and maybe(p):
        obj[key] = real(kind)


def swap_list(obj, key: str, kind: str, p: float = 0.5) -> None:
    if isinstance(obj, dict) and isinstance(obj.get(key), list) and maybe(p):
        obj[key] = [real(kind) if isinstance(v, str) else v for v in obj[key]]


def loopback(uri: str) -> str:
    try:
        u = urlsplit(uri)
    except ValueError:
        return uri
    if u.netloc and u.hostname not in ("127.0.0.1", "localhost", "::1"):
        # Port 9 (discard): nothing listens, the fetch fails fast and locally.
        return urlunsplit((u.scheme, "127.0.0.1:9", u.path, u.query, u.fragment))
    return uri


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    op = f"{case.method.upper()} {case.operation.path}"
    body = case.body
    if op == "POST /v1/recommendations":
        swap_field(body, "userId", "users")
        swap_field(body, "storeId", "stores")
    elif op == "POST /v1/pickup-estimate":
        swap_field(body, "storeId", "stores")
        swap_list(body, "items", "items")
    elif op == "POST /v1/events":
        # Generated event ids repeat a lot (Hypothesis favours "0"), and a repeated id is answered
        # as a duplicate without being stored: fresh ids make half the events reach the stream.
        if isinstance(body, dict) and isinstance(body.get("eventId"), str) and maybe(0.5):
            body["eventId"] = f"fuzz-{RNG.getrandbits(48):x}"
        swap_field(body, "userId", "users")
        swap_field(body, "storeId", "stores")
        swap_list(body, "itemIds", "items")
        # Events are accepted only from the last 2 days up to 5 minutes ahead; generated times
        # almost never are, so half get a time inside the window (a real phone's clock).
        if isinstance(body, dict) and isinstance(body.get("at"), str) and maybe(0.5):
            at = datetime.now(timezone.utc) - timedelta(seconds=RNG.uniform(0, 3600))
            body["at"] = at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    elif op == "GET /v1/users/{id}/offers":
        swap_field(case.path_parameters, "id", "users")
        swap_field(case.query, "storeId", "stores")
    elif op == "DELETE /v1/users/{id}":
        swap_field(case.path_parameters, "id", "users", 0.25)
    elif op == "PUT /v1/admin/models/{task}":
        swap_field(body, "uri", "modelUris", 0.3)
        if isinstance(body, dict) and isinstance(body.get("uri"), str):
            body["uri"] = loopback(body["uri"])
