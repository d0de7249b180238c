"""The lower side's registration table: every state driven with every input (docs/design.md §3, h2's test).

Invariant: after any sequence of inputs the machine is in a valid state, or a
pair the table lacks raised :class:`RegistrationError` and left it STOPPED.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import GatewayError, SipError
from gateway.gb28181.lower.registration import (
    TABLE,
    RegAction,
    RegInput,
    RegistrationError,
    RegistrationMachine,
    RegState,
)

S, I = RegState, RegInput  # noqa: E741 - short names keep the pairs readable
ANSWERS = {
    I.ACCEPTED,
    I.CHALLENGED,
    I.CREDENTIALS_REFUSED,
    I.INTERVAL_TOO_BRIEF,
    I.REDIRECTED,
    I.REFUSED,
    I.TIMED_OUT,
}


@settings(max_examples=500)
@given(st.sampled_from(list(RegState)), st.lists(st.sampled_from(list(RegInput)), max_size=40))
def test_any_input_sequence_gives_a_valid_state_or_our_error_and_stopped(
    start: RegState, inputs: list[RegInput]
) -> None:
    machine = RegistrationMachine(start)
    for inp in inputs:
        before = machine.state
        try:
            action = machine.fire(inp)
        except RegistrationError as exc:
            assert (before, inp) not in TABLE
            assert (exc.state, exc.input) == (before, inp)
            assert isinstance(exc, SipError) and isinstance(exc, GatewayError)
            assert machine.state is RegState.STOPPED
            continue
        assert isinstance(action, RegAction)
        assert machine.state in RegState
        assert (action, machine.state) == TABLE[(before, inp)]


def test_state_values_are_what_summaries_and_the_api_show() -> None:
    assert [s.value for s in RegState] == ["idle", "registering", "registered", "retry_wait", "stopped"]


def test_only_impossible_pairs_are_missing() -> None:
    """Answers need an attempt in flight, timers an armed timer: IDLE and RETRY_WAIT have no attempt,
    STOPPED no timer, REFRESH_DUE only exists while registered and RETRY_DUE only while not."""
    missing = {(s, i) for s in RegState for i in RegInput} - set(TABLE)
    expected = (
        {(S.IDLE, i) for i in (*ANSWERS, I.REFRESH_DUE, I.RETRY_DUE)}
        | {(S.RETRY_WAIT, i) for i in (*ANSWERS, I.REFRESH_DUE)}
        | {(S.REGISTERING, I.REFRESH_DUE), (S.REGISTERED, I.RETRY_DUE)}
        | {(S.STOPPED, I.REFRESH_DUE), (S.STOPPED, I.RETRY_DUE)}
    )
    assert missing == expected


def test_every_state_can_be_stopped_and_a_stopped_one_started() -> None:
    for state in RegState:
        machine = RegistrationMachine(state)
        machine.fire(I.STOP)
        assert machine.state is S.STOPPED
    machine = RegistrationMachine(S.STOPPED)
    assert machine.fire(I.START) is RegAction.SEND_REGISTER and machine.state is S.REGISTERING


def test_a_refresh_keeps_the_registration_and_only_the_first_2xx_comes_online() -> None:
    machine = RegistrationMachine(S.REGISTERING)
    assert machine.fire(I.ACCEPTED) is RegAction.COME_ONLINE
    assert machine.fire(I.REFRESH_DUE) is RegAction.SEND_REGISTER and machine.state is S.REGISTERED
    assert machine.fire(I.CHALLENGED) is RegAction.ANSWER_CHALLENGE and machine.state is S.REGISTERED
    assert machine.fire(I.ACCEPTED) is RegAction.ARM_REFRESH


def test_the_unregistration_answers_its_challenge_and_nothing_else() -> None:
    machine = RegistrationMachine(S.REGISTERED)
    assert machine.fire(I.UNREGISTER) is RegAction.SEND_UNREGISTER and machine.state is S.STOPPED
    assert machine.fire(I.CHALLENGED) is RegAction.ANSWER_CHALLENGE
    for inp in ANSWERS - {I.CHALLENGED}:
        assert machine.fire(inp) is RegAction.IGNORE and machine.state is S.STOPPED
