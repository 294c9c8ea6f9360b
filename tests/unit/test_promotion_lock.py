"""The promotion lock (trainer.promotion_lock): its lease, against the wait for it."""

from trainer.promotion_lock import DEAD_HOLDER_SECONDS, LEASE_SECONDS
from trainer.settings import TrainerSettings


def test_the_promotion_timeout_outlasts_a_killed_holders_lease() -> None:
    """A run killed inside the lock frees it when its lease ends and the repossessor runs;
    a waiter retries at most every 30 s. The default wait covers that, and then some."""
    assert LEASE_SECONDS == 60  # Prefect's minimum: the server refuses shorter leases
    default = TrainerSettings.model_fields["promotion_timeout_seconds"].default
    assert default >= 2 * DEAD_HOLDER_SECONDS
