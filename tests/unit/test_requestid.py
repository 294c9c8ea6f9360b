"""Request ids (common.web.requestid): a client's taken when sane, else one generated."""

from common.web.requestid import choose_request_id


def test_request_ids_are_taken_when_sane() -> None:
    assert choose_request_id("abc-123") == "abc-123"
    generated = choose_request_id("bad id with spaces\n")
    assert len(generated) == 32 and generated != choose_request_id(None)
    assert len(choose_request_id("x" * 200)) == 32
