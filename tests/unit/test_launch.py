"""The launcher's pure logic (agent.launch): exit codes, descriptors, processes."""

import os
import signal

from agent.launch import exit_code_to_status, present_fds, process_alive


def test_exit_codes_map_to_an_exit_or_the_same_signal() -> None:
    assert exit_code_to_status(0) == ("exit", 0)
    assert exit_code_to_status(1) == ("exit", 1)
    assert exit_code_to_status(-signal.SIGTERM) == ("signal", signal.SIGTERM)
    assert exit_code_to_status(-signal.SIGKILL) == ("signal", signal.SIGKILL)


def test_only_open_descriptors_are_sent() -> None:
    read, write = os.pipe()
    os.close(write)
    try:
        assert present_fds([read, write]) == [read]
    finally:
        os.close(read)


def test_process_alive_tells_running_from_gone() -> None:
    assert process_alive(os.getpid())
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    assert not process_alive(pid)
