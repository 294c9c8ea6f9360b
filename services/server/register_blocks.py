"""Register Prefect's block types once, before any API replica starts (docker-compose.ha.yaml).

Runs in the `server-migrate` container after `prefect server database upgrade -y`. Every
`prefect server start` registers the block types at start-up; two replicas starting at once
both inserted the same block type, and the loser's start-up failed on `uq_block_type__slug`
(the HA e2e test caught it). So the replicas start with
`PREFECT_SERVER_REGISTER_BLOCKS_ON_START=false`, and this does their registration, once.

Any error (the database away) is raised: the container exits non-zero and Compose starts no
replica (`service_completed_successfully`).
"""

import asyncio

from prefect.server.database import provide_database_interface
from prefect.server.models.block_registration import run_block_auto_registration


async def register_blocks() -> None:
    """What `prefect server start` does at start-up: Prefect's and its collections' blocks."""
    database = provide_database_interface()
    async with await database.session() as session:
        await run_block_auto_registration(session=session)


if __name__ == "__main__":
    asyncio.run(register_blocks())
