"""One TwiML reader that matches the writer: every kind of reply the renderer gives is
played by the simulator, and a verb the simulator does not know fails loudly."""

import inspect

import pytest
from twilio.twiml.voice_response import Dial, Gather, Say, VoiceResponse

from ivr.config import DialRoute, TaskRouterRoute, load_config
from ivr.domain.flow import Ask, Reply, Step, TicketInfo, say, waiting
from ivr.domain.lifecycle import TicketStatus
from ivr.sim.simulator import NOUNS, SSML, VERBS, UnknownTwiML, play, read
from ivr.voice.prompts import load_catalogues
from ivr.voice.twiml import Renderer

from ..support import CALLER, CONFIG

US = "+18887999666"
TICKET = TicketInfo("48151623", 1, 60)
QUERY = "ticket=48151623&priority=1"


@pytest.fixture(scope="module")
def config():
    return load_config(CONFIG)


@pytest.fixture(scope="module")
def renderer(config):
    return Renderer(config, load_catalogues(CONFIG.parent / "prompts"))


def routed_on(renderer, config, reply, route):
    """The reply on the US line routed another way (a renderer of its own: replies are
    cached per line number)."""
    line = config.line_for(US).model_copy(update={"route": route})
    return Renderer(config, renderer.catalogues).reply(reply, line)


def documents(renderer, config):
    """(renderer method, case, document) for every kind of reply the service gives."""
    line = config.line_for(US)
    silent = Renderer(config.model_copy(update={"queue": config.queue.model_copy(
        update={"hold_audio_url": None})}), renderer.catalogues)
    out = []
    for step in (Step.MENU, Step.PMI, Step.HOST_KEY, Step.PRIORITY):
        single = step in (Step.MENU, Step.PRIORITY)
        reply = Reply((say("menu", support_key="2"),), ask=Ask(step, single, 6, "1-0-0"))
        out.append(("reply", f"ask {step.value}", renderer.reply(reply, line)))
    routed = Reply((say("ticket_logged", ticket=TICKET.number),), route=TICKET)
    out += [
        ("reply", "route enqueue", renderer.reply(routed, line)),
        ("reply", "route taskrouter", routed_on(renderer, config, routed, TaskRouterRoute(
            kind="taskrouter", workflow_sid="WW" + "a" * 32))),
        ("reply", "route dial number", routed_on(renderer, config, routed, DialRoute(
            kind="dial", target="+44.20.7946.0000"))),
        ("reply", "route dial sip", routed_on(renderer, config, routed, DialRoute(
            kind="dial", target="sip:desk@example.com"))),
        ("reply", "transfer", renderer.reply(Reply((), transfer_to="+18887990125"), line)),
        ("reply", "goodbye", renderer.reply(Reply((say("goodbye"),), hangup=True), line)),
        ("after_queue", "leave", renderer.after_queue(line, TICKET.number, "leave", False)),
        ("after_queue", "unavailable", renderer.after_queue(line, TICKET.number, "error", False)),
        ("after_queue", "unavailable, no number to call back",
         renderer.after_queue(line, TICKET.number, "error", False, can_call_back=False)),
        ("after_queue", "served", renderer.after_queue(line, TICKET.number, "bridged", False)),
        ("wait", "callback and ticket", renderer.wait(
            waiting(3, 150, "1", offer_ticket=True), line, False, QUERY, True)),
        ("wait", "silence", silent.wait(waiting(2, 0, None, True), line, False, QUERY, False)),
        ("wait", "no keys", renderer.wait(waiting(2, 90, None), line, False, "", False)),
        ("wait", "no keys, silence", silent.wait(waiting(2, 0, None), line, False, "", False)),
        ("ticket_again", "ticket", renderer.ticket_again(US, {"ticket": TICKET.number,
                                                             "priority": "1"})),
        ("ticket_again", "malformed", renderer.ticket_again(US, {"ticket": "12ab"})),
        ("back_to_wait", "back to waiting", renderer.back_to_wait(QUERY)),
        ("leave", "leave", renderer.leave()),
        ("let_go", "let go, closed",
         renderer.let_go(line, False, TICKET.number, TicketStatus.CLOSED, True)),
        ("let_go", "let go, no number to call back",
         renderer.let_go(line, False, TICKET.number, TicketStatus.CALLBACK_REQUESTED, False)),
        ("fallback", "fallback", renderer.fallback(line)),
        ("hangup", "hangup", renderer.hangup()),
        ("empty", "empty", renderer.empty()),
    ]
    return out


def test_every_reply_method_of_the_renderer_is_exercised(renderer, config):
    public = {name for name, member in inspect.getmembers(Renderer, inspect.isfunction)
              if not name.startswith("_")} - {"voices"}
    assert {method for method, _, _ in documents(renderer, config)} == public


def test_every_element_the_renderer_writes_is_one_the_simulator_reads(renderer, config):
    written = set()
    for method, case, document in documents(renderer, config):
        root = read(document)  # raises on anything the simulator cannot play
        for verb in root:
            written.add(verb.tag)
            for child in verb.iter():
                if child is not verb:
                    assert child.tag in NOUNS.get(verb.tag, set()) | {"Say"} | SSML, case
    assert written <= VERBS, written - VERBS
    assert {"Say", "Gather", "Redirect", "Enqueue", "Dial", "Hangup", "Leave", "Play",
            "Pause"} <= written


def by_case(renderer, config):
    return {case: document for _, case, document in documents(renderer, config)}


@pytest.mark.parametrize("step, token, path, digits", [
    ("menu", "2", "/voice/menu?p=1-0-0", "2"),
    ("pmi", "5550100201#", "/voice/pmi?p=1-0-0", "5550100201"),
    ("host_key", "9164023#", "/voice/host-key?p=1-0-0", "9164023"),
    ("priority", "12", "/voice/priority?p=1-0-0", "1"),   # one key is taken; the rest dropped
])
def test_a_prompt_is_a_gather_the_caller_answers_or_lets_time_out(renderer, config, step, token,
                                                                  path, digits):
    document = by_case(renderer, config)[f"ask {step}"]
    result, following, extra = play(document, [token])
    assert (following, extra) == (path, {"Digits": digits})
    assert result.prompts[0].waits_for_input and result.said()[0].startswith("For technical")
    result, following, extra = play(document, ["-"])
    assert (following, extra) == (path, {})  # the Redirect after the Gather
    assert [e.kind for e in result.events] == ["say", "timeout"]
    result, following, _ = play(document, [])
    assert following is None and result.outcome == "abandoned"


@pytest.mark.parametrize("case, route", [
    # Each caller waits in a queue of their own, so an engineer gets the caller they hear of.
    ("route enqueue", {"verb": "Enqueue", "queue": f"support-us.{TICKET.number}"}),
    ("route taskrouter", {"verb": "Enqueue", "workflow_sid": "WW" + "a" * 32, "queue": None,
                          "task": {"ticket": TICKET.number, "priority": 1,
                                   "region": "United States", "target_response_minutes": 60}}),
    ("route dial number", {"verb": "Dial", "targets": ["+442079460000"]}),
    ("route dial sip", {"verb": "Dial", "targets": ["sip:desk@example.com"]}),
])
def test_every_route_is_read_with_its_ticket(renderer, config, case, route):
    result, following, _ = play(by_case(renderer, config)[case])
    assert following is None and result.outcome == "routed"
    assert result.route == route and (result.ticket, result.priority) == (TICKET.number, 1)
    assert result.prompts[0].step == "route" and not result.prompts[0].waits_for_input
    assert " ".join(TICKET.number) in result.said()[0]
    if route["verb"] == "Enqueue":
        assert result.wait_url == f"/voice/wait?{QUERY}"
        assert result.queue_action == f"/voice/queue-result?{QUERY}"


def test_a_transfer_a_goodbye_and_the_fallback_are_read(renderer, config):
    cases = by_case(renderer, config)
    result, _, _ = play(cases["transfer"])
    assert result.outcome == "transferred" and result.route["targets"] == ["+18887990125"]
    result, _, _ = play(cases["goodbye"])
    assert result.outcome == "hangup" and result.said() == ["Thank you for calling. Goodbye."]
    result, _, _ = play(cases["hangup"])
    assert result.outcome == "hangup" and result.events[-1].text == "hangup"
    result, _, _ = play(cases["fallback"])
    assert result.route == {"verb": "Enqueue", "queue": "support"} and result.said()
    for case in ("leave", "unavailable", "served"):
        result, following, _ = play(cases[case])
        assert following is None and result.events[-1].kind == "hangup", case
    assert " ".join(TICKET.number) in play(cases["unavailable"])[0].said()[0]
    assert play(cases["served"])[0].said() == []


def test_the_queue_documents_are_read_with_their_keys(renderer, config):
    cases = by_case(renderer, config)
    result, following, extra = play(cases["callback and ticket"], ["1"], "/voice/wait",
                                    waiting=True)
    assert following == f"/voice/wait-choice?{QUERY}" and extra == {"Digits": "1"}
    assert [e.kind for e in result.events][-2:] == ["play", "press"]
    result, following, _ = play(cases["callback and ticket"], [], "/voice/wait", waiting=True)
    assert following is None and result.outcome != "abandoned"  # listens on, no key left
    result, following, extra = play(cases["silence"], ["*"], "/voice/wait", waiting=True)
    assert extra == {"Digits": "*"} and "pause" in [e.kind for e in result.events]
    result, following, _ = play(cases["no keys"], [], "/voice/wait", waiting=True)
    assert following is None and [e.kind for e in result.events] == ["say", "say", "play"]
    result, following, _ = play(cases["no keys, silence"], [], "/voice/wait", waiting=True)
    assert following is None and [e.kind for e in result.events] == ["say", "pause"]
    result, _, _ = play(cases["ticket"], [], "/voice/wait-choice", waiting=True)
    assert result.said() == [f"Your ticket number is {' '.join(TICKET.number)}. "
                             f"Once more: {' '.join(TICKET.number)}."]
    assert list(read(cases["malformed"])) == []
    result, _, _ = play(cases["leave"], [], "/voice/wait-choice", waiting=True)
    assert result.events[-1].text == "left the queue"
    for case in ("let go, closed", "let go, no number to call back"):
        result, following, _ = play(cases[case], [], "/voice/wait", waiting=True)
        assert following is None and result.events[-1].kind == "hangup", case
        assert " ".join(TICKET.number) in result.said()[0], case
    result, following, _ = play(cases["empty"], [], "/voice/wait-choice", waiting=True)
    assert following is None and result.events == []  # back to the wait document
    result, _, _ = play(cases["empty"])
    assert result.events[-1].text == "end of instructions"


def test_a_dial_to_a_queue_or_client_is_read(renderer):
    response = VoiceResponse()
    dial = Dial(action="/voice/queue-result", method="POST")
    dial.queue("support-us")
    dial.client("engineer-1")
    response.append(dial)
    result, _, _ = play(str(response))
    assert result.route == {"verb": "Dial", "targets": ["support-us", "engineer-1"]}


def unknown_documents():
    refer = VoiceResponse()
    refer.refer().sip("sip:desk@example.com")
    stream = VoiceResponse()
    stream.connect().stream(url="wss://example.com/audio")
    gather = VoiceResponse()
    outer = Gather(action="/voice/menu")
    outer.append(Dial("+18887990125"))
    gather.append(outer)
    ssml = VoiceResponse()
    spoken = Say("Hello")
    spoken.append(Dial("+18887990125"))
    ssml.append(spoken)
    return {"Refer": str(refer), "Connect": str(stream), "Dial inside Gather": str(gather),
            "Dial inside Say": str(ssml), "no Response": "<Say>hello</Say>", "not XML": "<Resp"}


@pytest.mark.parametrize("case", unknown_documents())
def test_a_verb_the_simulator_does_not_know_fails_loudly(case):
    document = unknown_documents()[case]
    with pytest.raises(UnknownTwiML):
        read(document)
    with pytest.raises(UnknownTwiML):
        play(document, ["1"])


def test_a_call_answered_with_an_unknown_verb_raises_instead_of_ending_quietly(
        app, ivr, simulator, monkeypatch):
    refer = VoiceResponse()
    refer.refer().sip("sip:desk@example.com")
    monkeypatch.setattr(ivr.renderer, "reply", lambda *args, **kwargs: str(refer))
    with pytest.raises(UnknownTwiML, match="/voice: <Refer>"):
        simulator.call(US, CALLER, ["2"])
    out = app.test_cli_runner().invoke(args=["simulate", "--to", US, "--digits", "2"])
    assert out.exit_code == 1 and "<Refer> is not a verb the simulator plays" in out.output


def test_a_gather_may_hold_speech_music_and_silence():
    document = VoiceResponse()
    gather = Gather(action="/voice/wait-choice", num_digits=1)
    gather.say("Hold on.")
    gather.play("https://example.com/hold.mp3")
    gather.pause(length=2)
    document.append(gather)
    result, _, _ = play(str(document), [], waiting=True)
    assert [e.kind for e in result.events] == ["say", "play", "pause"]


def test_a_key_that_is_not_the_callback_key_sends_the_caller_back_to_waiting(renderer, config):
    result, following, extra = play(by_case(renderer, config)["back to waiting"])
    assert following == f"/voice/wait?{QUERY}" and extra == {}
    assert result.events == []
