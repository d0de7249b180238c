"""Transaction state machines (RFC 3261 §17, RFC 6026) on a fake clock."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.gb28181.sip import (
    Headers,
    Peer,
    SipRequest,
    SipResponse,
    SipTimers,
    TransactionError,
    Transport,
    TxInput,
    TxState,
    make_response,
    parse_message,
)
from gateway.gb28181.sip.transaction import (
    ClientInvite,
    ClientNonInvite,
    Effects,
    ServerInvite,
    ServerNonInvite,
    Transaction,
)

T = SipTimers(t1=0.5)  # T2 = 4, T4 = 5
UDP = Peer(Transport.UDP, "10.0.0.2", 5060)
TCP = Peer(Transport.TCP, "10.0.0.2", 5060, conn_id=1)
S, I = TxState, TxInput  # noqa: E741 - short names keep the tables readable


def request(method: str = "MESSAGE", branch: str = "z9hG4bKtest") -> SipRequest:
    headers = Headers(
        [
            ("Via", f"SIP/2.0/UDP 10.0.0.1:5060;rport;branch={branch}"),
            ("From", "<sip:34020000002000000001@3402000000>;tag=f1"),
            ("To", "<sip:34020000001320000001@3402000000>"),
            ("Call-ID", "call-1"),
            ("CSeq", f"7 {method}"),
            ("Max-Forwards", "70"),
        ]
    )
    return SipRequest(headers=headers, body=b"", method=method, uri="sip:34020000001320000001@10.0.0.2:5060")


def response(req: SipRequest, status: int) -> SipResponse:
    return make_response(req, status, to_tag="t9")


def run(txn: Transaction, until: float) -> list[tuple[float, TxInput, Effects]]:
    """Fire the transaction's own timers in time order up to ``until``."""
    log: list[tuple[float, TxInput, Effects]] = []
    while not txn.terminated:
        at = txn.next_deadline()
        if at is None or at > until:
            break
        for timer in txn.expired_timers(at):
            if txn.timers.get(timer, math.inf) <= at:
                log.append((at, timer, txn.fire(timer, at)))
            if txn.terminated:
                break
    return log


def sends(log: list[tuple[float, TxInput, Effects]]) -> list[float]:
    return [at for at, _, fx in log if fx.send]


# --- client non-INVITE (§17.1.2) ------------------------------------------------------


def test_non_invite_client_retransmits_with_e_doubling_capped_at_t2() -> None:
    txn = ClientNonInvite("k", request(), UDP, T)
    assert txn.state is S.TRYING
    assert txn.start(0.0).send == [bytes(txn.request)]
    log = run(txn, 100.0)
    assert sends(log) == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    at, timer, fx = log[-1]
    assert (at, timer, fx.timed_out) == (32.0, I.TIMER_F, True)
    assert txn.state is S.TERMINATED
    assert txn.next_deadline() is None


def test_non_invite_client_after_1xx_retransmits_every_t2() -> None:
    req = request()
    txn = ClientNonInvite("k", req, UDP, T)
    txn.start(0.0)
    fx = txn.fire(I.RECV_1XX, 0.2, response(req, 100))
    assert fx.deliver is not None and fx.deliver.status == 100
    assert txn.state is S.PROCEEDING
    log = run(txn, 100.0)
    assert sends(log) == [4.2, 8.2, 12.2, 16.2, 20.2, 24.2, 28.2]
    # Timer F keeps counting from the first send: a 1xx used to restart it.
    assert log[-1][:2] == (32.0, I.TIMER_F)
    assert log[-1][2].timed_out


def test_non_invite_client_final_response_then_timer_k() -> None:
    req = request()
    txn = ClientNonInvite("k", req, UDP, T)
    txn.start(0.0)
    fx = txn.fire(I.RECV_2XX, 1.0, response(req, 200))
    assert fx.deliver is not None and fx.deliver.status == 200
    assert txn.state is S.COMPLETED
    assert txn.timers == {I.TIMER_K: 1.0 + T.t4}
    # Retransmitted final responses are absorbed.
    again = txn.fire(I.RECV_2XX, 2.0, response(req, 200))
    assert (again.deliver, again.send) == (None, [])
    assert run(txn, 100.0)[-1][:2] == (6.0, I.TIMER_K)
    assert txn.state is S.TERMINATED


def test_non_invite_client_over_tcp_no_retransmission_and_k_zero() -> None:
    req = request()
    txn = ClientNonInvite("k", req, TCP, T)
    txn.start(0.0)
    assert set(txn.timers) == {I.TIMER_F}
    txn.fire(I.RECV_300_699, 3.0, response(req, 404))
    assert txn.timers == {I.TIMER_K: 3.0}
    assert run(txn, 3.0)[-1][:2] == (3.0, I.TIMER_K)
    assert txn.terminated


def test_non_invite_client_over_tcp_times_out_without_sending_again() -> None:
    txn = ClientNonInvite("k", request(), TCP, T)
    txn.start(0.0)
    log = run(txn, 100.0)
    assert [(at, timer) for at, timer, _ in log] == [(32.0, I.TIMER_F)]
    assert log[0][2].timed_out and not log[0][2].send


# --- client INVITE (§17.1.1, RFC 6026) ------------------------------------------------------


def test_invite_client_timer_a_doubles_and_timer_b_times_out() -> None:
    txn = ClientInvite("k", request("INVITE"), UDP, T)
    assert txn.state is S.CALLING
    txn.start(0.0)
    log = run(txn, 100.0)
    # Timer A doubles without the T2 cap (it used to be capped like Timer E).
    assert sends(log) == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert log[-1][:2] == (32.0, I.TIMER_B)
    assert log[-1][2].timed_out
    assert txn.terminated


def test_invite_client_1xx_stops_retransmission() -> None:
    req = request("INVITE")
    txn = ClientInvite("k", req, UDP, T)
    txn.start(0.0)
    txn.fire(I.RECV_1XX, 0.1, response(req, 100))
    assert txn.state is S.PROCEEDING
    assert I.TIMER_A not in txn.timers
    assert sends(run(txn, 100.0)) == []


def test_invite_client_4xx_is_acked_and_ack_resent_for_a_retransmission() -> None:
    req = request("INVITE")
    txn = ClientInvite("k", req, UDP, T)
    txn.start(0.0)
    final = response(req, 486)
    fx = txn.fire(I.RECV_300_699, 1.0, final)
    assert fx.deliver is final
    assert txn.state is S.COMPLETED
    assert len(fx.send) == 1
    ack = parse_message(fx.send[0])
    assert isinstance(ack, SipRequest)
    assert (ack.method, ack.uri) == ("ACK", req.uri)
    assert ack.top_via.branch == "z9hG4bKtest"  # same transaction as the INVITE
    assert (ack.cseq.seq, ack.cseq.method) == (7, "ACK")
    assert ack.to.tag == "t9"
    again = txn.fire(I.RECV_300_699, 2.0, final)
    assert again.send == fx.send and again.deliver is None
    assert txn.timers == {I.TIMER_D: 1.0 + 32.0}
    assert run(txn, 100.0)[-1][:2] == (33.0, I.TIMER_D)
    assert txn.terminated


def test_invite_client_timer_d_is_zero_over_tcp() -> None:
    req = request("INVITE")
    txn = ClientInvite("k", req, TCP, T)
    txn.start(0.0)
    assert set(txn.timers) == {I.TIMER_B}
    txn.fire(I.RECV_300_699, 1.0, response(req, 404))
    assert txn.timers == {I.TIMER_D: 1.0}


def test_invite_client_2xx_accepted_then_timer_m() -> None:
    req = request("INVITE")
    txn = ClientInvite("k", req, UDP, T)
    txn.start(0.0)
    ok = response(req, 200)
    fx = txn.fire(I.RECV_2XX, 1.0, ok)
    assert fx.deliver is ok and fx.send == []  # the TU ACKs a 2xx, not the transaction
    assert txn.state is S.ACCEPTED
    assert txn.fire(I.RECV_2XX, 1.5, ok).deliver is ok  # retransmissions go to the TU too
    # A stray non-2xx final response in Accepted used to kill the transaction.
    assert txn.fire(I.RECV_300_699, 1.6, response(req, 500)).deliver is None
    assert txn.state is S.ACCEPTED
    assert run(txn, 100.0)[-1][:2] == (33.0, I.TIMER_M)
    assert txn.terminated


def test_invite_client_late_2xx_after_4xx_is_absorbed() -> None:
    req = request("INVITE")
    txn = ClientInvite("k", req, UDP, T)
    txn.start(0.0)
    txn.fire(I.RECV_300_699, 1.0, response(req, 486))
    fx = txn.fire(I.RECV_2XX, 1.2, response(req, 200))
    assert (fx.deliver, fx.send, txn.state) == (None, [], S.COMPLETED)


# --- server non-INVITE (§17.2.2) -----------------------------------------------------------


def test_non_invite_server_absorbs_retransmission_in_trying() -> None:
    txn = ServerNonInvite("k", request(), UDP, T)
    assert txn.state is S.TRYING
    fx = txn.fire(I.RECV_REQUEST, 0.1)
    assert (fx.send, fx.deliver, txn.state) == ([], None, S.TRYING)


def test_non_invite_server_resends_last_response_in_completed_then_timer_j() -> None:
    req = request()
    txn = ServerNonInvite("k", req, UDP, T)
    ok = response(req, 200)
    assert txn.fire(I.SEND_2XX, 1.0, ok).send == [bytes(ok)]
    assert txn.state is S.COMPLETED
    assert txn.fire(I.RECV_REQUEST, 2.0).send == [bytes(ok)]
    assert txn.timers == {I.TIMER_J: 1.0 + 32.0}
    assert run(txn, 100.0)[-1][:2] == (33.0, I.TIMER_J)
    assert txn.terminated


def test_non_invite_server_provisional_then_final() -> None:
    req = request()
    txn = ServerNonInvite("k", req, UDP, T)
    trying = response(req, 100)
    txn.fire(I.SEND_1XX, 0.0, trying)
    assert txn.state is S.PROCEEDING
    assert txn.fire(I.RECV_REQUEST, 0.5).send == [bytes(trying)]
    txn.fire(I.SEND_300_699, 1.0, response(req, 403))
    assert txn.state is S.COMPLETED


def test_non_invite_server_timer_j_is_zero_over_tcp() -> None:
    req = request()
    txn = ServerNonInvite("k", req, TCP, T)
    txn.fire(I.SEND_2XX, 4.0, response(req, 200))
    assert txn.timers == {I.TIMER_J: 4.0}


def test_tu_answering_twice_raises_and_terminates() -> None:
    req = request()
    txn = ServerNonInvite("k", req, UDP, T)
    txn.fire(I.SEND_2XX, 0.0, response(req, 200))
    with pytest.raises(TransactionError) as info:
        txn.fire(I.SEND_2XX, 0.1, response(req, 200))
    assert info.value.status_hint == 500
    assert txn.state is S.TERMINATED
    assert txn.timers == {}


# --- server INVITE (§17.2.1, RFC 6026) -------------------------------------------------------


def test_invite_server_4xx_retransmitted_by_timer_g_until_timer_h() -> None:
    req = request("INVITE")
    txn = ServerInvite("k", req, UDP, T)
    assert txn.state is S.PROCEEDING
    busy = response(req, 486)
    txn.fire(I.SEND_300_699, 0.0, busy)
    assert txn.state is S.COMPLETED
    log = run(txn, 100.0)
    assert sends(log) == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert all(fx.send == [bytes(busy)] for _, timer, fx in log if timer is I.TIMER_G)
    assert log[-1][:2] == (32.0, I.TIMER_H)
    assert log[-1][2].timed_out
    assert txn.terminated


def test_invite_server_ack_confirms_then_timer_i() -> None:
    req = request("INVITE")
    txn = ServerInvite("k", req, UDP, T)
    txn.fire(I.SEND_300_699, 0.0, response(req, 486))
    assert sends(run(txn, 2.0)) == [0.5, 1.5]
    fx = txn.fire(I.RECV_ACK, 2.0)
    assert (fx.send, txn.state) == ([], S.CONFIRMED)
    assert txn.timers == {I.TIMER_I: 2.0 + T.t4}
    assert txn.fire(I.RECV_ACK, 2.5).send == []  # ACK retransmissions absorbed
    assert run(txn, 100.0)[-1][:2] == (7.0, I.TIMER_I)
    assert txn.terminated


def test_invite_server_over_tcp_no_timer_g_and_i_zero() -> None:
    req = request("INVITE")
    txn = ServerInvite("k", req, TCP, T)
    txn.fire(I.SEND_300_699, 0.0, response(req, 486))
    assert set(txn.timers) == {I.TIMER_H}
    txn.fire(I.RECV_ACK, 1.0)
    assert txn.timers == {I.TIMER_I: 1.0}


def test_invite_server_2xx_retransmitted_until_ack() -> None:
    req = request("INVITE")
    txn = ServerInvite("k", req, UDP, T)
    txn.fire(I.SEND_1XX, 0.0, response(req, 100))
    ok = response(req, 200)
    txn.fire(I.SEND_2XX, 0.1, ok)
    assert txn.state is S.ACCEPTED
    log = run(txn, 4.0)
    assert sends(log) == [0.6, 1.6, 3.6]
    assert all(fx.send == [bytes(ok)] for _, _, fx in log)
    assert txn.fire(I.RECV_REQUEST, 4.0).send == [bytes(ok)]
    txn.fire(I.RECV_ACK, 4.0)
    assert txn.terminated


def test_invite_server_2xx_never_acked_ends_with_timer_l() -> None:
    req = request("INVITE")
    txn = ServerInvite("k", req, UDP, T)
    txn.fire(I.SEND_2XX, 0.0, response(req, 200))
    log = run(txn, 100.0)
    assert log[-1][:2] == (32.0, I.TIMER_L)
    assert txn.terminated


# --- every (state, input) pair ----------------------------------------------------------------

STATUS_FOR = {
    I.RECV_1XX: 100,
    I.SEND_1XX: 180,
    I.RECV_2XX: 200,
    I.SEND_2XX: 200,
    I.RECV_300_699: 486,
    I.SEND_300_699: 486,
}
CLASSES = [ClientNonInvite, ClientInvite, ServerNonInvite, ServerInvite]


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
@pytest.mark.parametrize("peer", [UDP, TCP], ids=["udp", "tcp"])
@settings(max_examples=60, deadline=None)
@given(inputs=st.lists(st.sampled_from(list(TxInput)), max_size=25), step=st.floats(0.0, 40.0))
def test_random_inputs_leave_a_valid_state_or_terminate_with_transaction_error(
    cls: type[Transaction], peer: Peer, inputs: list[TxInput], step: float
) -> None:
    req = request("INVITE" if cls in (ClientInvite, ServerInvite) else "MESSAGE")
    txn = cls("k", req, peer, T)
    now = 0.0
    if isinstance(txn, (ClientInvite, ClientNonInvite)):
        txn.start(now)
    assert txn.state is cls.INITIAL
    for inp in inputs:
        now += step
        status = STATUS_FOR.get(inp)
        try:
            txn.fire(inp, now, response(req, status) if status is not None else None)
        except TransactionError:
            assert txn.state is S.TERMINATED
            assert txn.timers == {}
            continue
        assert isinstance(txn.state, TxState)
        if txn.terminated:
            assert txn.timers == {}


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_every_non_terminated_state_absorbs_network_responses_and_requests(cls: type[Transaction]) -> None:
    """Stray network input must never kill a live transaction: only the TU's misuse may."""
    client = cls in (ClientInvite, ClientNonInvite)
    network = [I.RECV_1XX, I.RECV_2XX, I.RECV_300_699] if client else [I.RECV_REQUEST]
    states = {state for state, _ in cls.TABLE} - {S.TERMINATED}
    for state in states:
        for inp in network:
            assert (state, inp) in cls.TABLE, (state, inp)
