"""The promotion lock: Prefect's global concurrency limit `model-promotion` (limit 1, created
by trainer.register), which serialises read-compare-set of the `champion` alias.

The slot is taken with a lease of 60 s, Prefect's minimum (its default is 300 s): a holder
renews it every 45 s while it lives, and a holder killed with -9 frees the slot when the lease
ends and the server's repossessor next runs, at most 75 s later. A waiter that gives up says
so as the lock's error, not as MLflow's.
"""

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from prefect.concurrency.sync import concurrency

from common.contract import PROMOTION_LOCK
from trainer.registry import PromotionLockError

LEASE_SECONDS = 60  # the server refuses shorter leases
REPOSSESSOR_SECONDS = 15  # how often Prefect's server frees the slots of expired leases
# A waiter retries when the server says (Retry-After), at most 30 s apart by default
# (PREFECT_SERVER_CONCURRENCY_MAXIMUM_CONCURRENCY_SLOT_WAIT_SECONDS), with some jitter.
RETRY_AFTER_SECONDS = 30
# The longest a waiter can wait for the slot of a holder killed just after renewing its lease.
DEAD_HOLDER_SECONDS = LEASE_SECONDS + REPOSSESSOR_SECONDS + RETRY_AFTER_SECONDS


@contextmanager
def promotion_lock(timeout_seconds: float) -> Iterator[None]:
    """Hold the promotion lock; wait up to `timeout_seconds` for it, then raise
    PromotionLockError."""
    with ExitStack() as held:
        try:
            held.enter_context(
                concurrency(
                    PROMOTION_LOCK,
                    occupy=1,
                    strict=True,
                    timeout_seconds=timeout_seconds,
                    lease_duration=LEASE_SECONDS,
                )
            )
        except TimeoutError as error:  # prefect's AcquireConcurrencySlotTimeoutError
            raise PromotionLockError(
                f"the promotion lock (Prefect's global concurrency limit {PROMOTION_LOCK!r}) "
                f"was not free within {timeout_seconds:g} s: another run's promotion held it "
                f"that long, or a killed run's slot outlived its {LEASE_SECONDS} s lease "
                f"(see it with `prefect global-concurrency-limit inspect {PROMOTION_LOCK}`)"
            ) from error
        yield
