"""Every way the promotion gate refuses live, through the real operator, with prepared exports.

One operator subprocess serves the module, started with ``--reviewers`` naming five external reviewers
on a local chat-completions server (support/reviewers.py): alpha, beta, slow (timeout 1 s) and two
entries both named twin. Their API key lives in a Secret the operator reads. Each test has its own bot
(and namespace); what each reviewer answers is set per bot, so the cases do not interfere.

The exports are written into ``<bot>-evidence`` exactly as a runner writes them (get + update with the
runner ServiceAccount's identity); support/evidence.py computes the runner's side independently of the
replay. sma_cross on seed 1 trades 13 times with a profit and 0 residuals: with the bots' settings,
every built-in reviewer votes PROCEED at LOW risk on it. Seed 2 loses a little: the performance reviewer
then votes HOLD at MEDIUM risk. The real runner's own evidence is tested in test_promotion_live.py.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from support.evidence import bars
from support.kube import Cluster
from support.operator import OperatorProcess, condition, strategy_config
from support.promotion import (
    EXPORT_BARS,
    bot_of,
    event_reasons,
    events_of,
    live_bot,
    prepared_export,
    reason,
    runtime_of,
    start_operator_with_reviewers,
    tampered,
    until,
    wait_runtime,
    write_export,
)
from support.reviewers import Answer, ReviewerServer
from tradewarden.api.market import Candle
from tradewarden.api.tradingbot import TradingBot
from tradewarden.emulator import Emulator

pytestmark = pytest.mark.cluster

CANARY = f"sk-canary-{uuid.uuid4().hex}"
EXTERNALS = (("alpha", "alpha", 10), ("beta", "beta", 10), ("slow", "slow", 1), ("twin", "twin1", 10),
             ("twin", "twin2", 10))


@pytest.fixture(scope="module")
def server() -> Iterator[ReviewerServer]:
    srv = ReviewerServer().start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def operator(cluster: Cluster, server: ReviewerServer,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    op = start_operator_with_reviewers(cluster, tmp_path_factory.mktemp("operator"),
                                       [(name, server.url(path), timeout) for name, path, timeout in EXTERNALS],
                                       CANARY)
    yield op
    op.stop()
    op.delete_namespaces()


@pytest.fixture
def ns(cluster: Cluster, operator: OperatorProcess, request: pytest.FixtureRequest) -> str:
    name = operator.namespace(re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[5:30])
    sc = strategy_config("sma", strategy="sma_cross", params={})
    sc["spec"]["timeframe"] = "1m"
    cluster.apply(sc, namespace=name)
    return name


#: The venues of the prepared exports: one emulator per series seed, past the bars the exports hold. The
#: gate compares an export's bars with the venue's own before it replays anything.
VENUES: dict[int, Emulator] = {}


@pytest.fixture(scope="module", autouse=True)
def venues() -> Iterator[dict[int, Emulator]]:
    for seed in (1, 2):
        VENUES[seed] = Emulator(seed=seed, bar_seconds=None)
        VENUES[seed].start()
        VENUES[seed].advance(EXPORT_BARS + 10)
    yield VENUES
    for emu in VENUES.values():
        emu.stop()
    VENUES.clear()


def start_bot(cluster: Cluster, op: OperatorProcess, ns: str, name: str, seed: int = 1, **spec: Any) -> None:
    venue = {"sandbox": False, "apiUrl": VENUES[seed].url}
    cluster.apply(live_bot(name, "sma", exchange=venue, **spec), namespace=ns)
    wait_runtime(cluster, op, ns, name, lambda r: r.strategy.key == "sma_cross")


def export_for(cluster: Cluster, op: OperatorProcess, ns: str, name: str, seed: int = 1, tamper: bool = False) -> None:
    runtime = runtime_of(cluster, ns, name)
    assert runtime is not None
    export = prepared_export(runtime, seed=seed)
    write_export(cluster, ns, name, tampered(export) if tamper else export)


def settled(cluster: Cluster, op: OperatorProcess, ns: str, name: str, replay: str, consensus: str,
            timeout: float = 60) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        bot = bot_of(cluster, ns, name)
        got = (reason(bot, "ReplayVerified"), reason(bot, "ConsensusApproved"))
        assert got == (replay, consensus), got
        return bot
    found: dict[str, Any] = until(op, check, f"{name}: ReplayVerified {replay}, ConsensusApproved {consensus}",
                                  timeout)
    return found


def assert_paper(cluster: Cluster, bot: dict[str, Any], promoted_reason: str) -> None:
    ns, name = bot["metadata"]["namespace"], bot["metadata"]["name"]
    assert bot["status"]["effectiveMode"] == "paper"
    promoted = next(c for c in bot["status"]["conditions"] if c["type"] == "Promoted")
    assert (promoted["status"], promoted["reason"]) == ("False", promoted_reason)
    assert "capital" not in bot["status"]
    runtime = runtime_of(cluster, ns, name)
    assert runtime is not None
    assert runtime.effective_mode.value == "paper"
    assert not runtime.gate_hash_matches()
    assert runtime.capital.live_capital == 0.0


def assert_live(cluster: Cluster, bot: dict[str, Any], step: int, amount: float) -> None:
    ns, name = bot["metadata"]["namespace"], bot["metadata"]["name"]
    assert bot["status"]["effectiveMode"] == "live"
    assert bot["status"]["capital"]["step"] == step
    runtime = runtime_of(cluster, ns, name)
    assert runtime is not None
    assert runtime.effective_mode.value == "live"
    assert runtime.gate_hash_matches()
    assert runtime.gate_replay_hash == bot["status"]["replay"]["resultHash"]
    assert runtime.gate_consensus_hash == bot["status"]["consensus"]["evidenceHash"]
    assert runtime.capital.live_capital == amount


# ------------------------------------------------------------------------------------------ the aging bot


@pytest.fixture(scope="module")
def aging(cluster: Cluster, operator: OperatorProcess) -> tuple[str, str, float]:
    """A bot promoted at the start of the module with maxEvidenceAgeMinutes 1, whose runner then stops
    exporting: the last test checks that its evidence went stale. Returns (namespace, name, promoted at)."""
    ns = operator.namespace("aging")
    sc = strategy_config("sma", strategy="sma_cross", params={})
    sc["spec"]["timeframe"] = "1m"
    cluster.apply(sc, namespace=ns)
    start_bot(cluster, operator, ns, "aging", promotion={"maxEvidenceAgeMinutes": 1})
    export_for(cluster, operator, ns, "aging")
    settled(cluster, operator, ns, "aging", "Passed", "Approved")
    until(operator, lambda: bot_of(cluster, ns, "aging")["status"]["effectiveMode"] == "live", "aging bot live")
    assert_live(cluster, bot_of(cluster, ns, "aging"), 0, 100.0)
    return ns, "aging", time.monotonic()


# ------------------------------------------------------------------------------------------ refusals


def test_no_evidence_is_missing_and_the_runner_may_export_only_into_its_own_configmap(
        cluster: Cluster, operator: OperatorProcess, ns: str, aging: Any) -> None:
    start_bot(cluster, operator, ns, "nothing")
    bot = settled(cluster, operator, ns, "nothing", "Missing", "Missing")
    assert_paper(cluster, bot, "ReplayMissing")
    cm = cluster.get_json("configmap", "nothing-evidence", "-n", ns)
    assert cm["metadata"]["ownerReferences"][0]["uid"] == bot["metadata"]["uid"]
    assert cm["metadata"]["labels"]["app.kubernetes.io/component"] == "evidence"
    assert not cm.get("binaryData")
    assert not cm.get("data")
    account = f"system:serviceaccount:{ns}:nothing-runner"
    for verb, what, allowed in (("get", "nothing-evidence", "yes"), ("update", "nothing-evidence", "yes"),
                                ("patch", "nothing-evidence", "no"), ("delete", "nothing-evidence", "no"),
                                ("update", "nothing-runtime", "no"), ("update", "other-evidence", "no")):
        out = cluster.kubectl("auth", "can-i", verb, f"configmaps/{what}", "-n", ns, "--as", account, check=False)
        assert out.stdout.strip() == allowed, f"{verb} {what}"


def test_an_export_of_another_config_is_not_replayed(cluster: Cluster, operator: OperatorProcess, ns: str) -> None:
    start_bot(cluster, operator, ns, "other")
    runtime = runtime_of(cluster, ns, "other")
    assert runtime is not None
    export = prepared_export(runtime).model_copy(update={"config_hash": "sha256:" + "0" * 64})
    write_export(cluster, ns, "other", export)
    time.sleep(3)
    bot = bot_of(cluster, ns, "other")
    assert reason(bot, "ReplayVerified") == "Missing"
    assert "replay" not in bot["status"]


def test_a_tampered_export_fails_the_replay(cluster: Cluster, operator: OperatorProcess, ns: str) -> None:
    start_bot(cluster, operator, ns, "tampered")
    export_for(cluster, operator, ns, "tampered", tamper=True)
    bot = settled(cluster, operator, ns, "tampered", "Failed", "Missing")
    assert_paper(cluster, bot, "ReplayFailed")
    replay = bot["status"]["replay"]
    assert replay["passed"] is False
    assert replay["residuals"] == replay["tradesCompared"] == 13
    assert "residuals between replay and runner" in replay["message"]
    assert "consensus" not in bot["status"], "the reviewers vote only on a passing replay"
    assert "Failed" in event_reasons(cluster, ns, "tampered")


def test_a_forged_export_is_refused_and_a_future_date_blocks_nothing(cluster: Cluster, operator: OperatorProcess,
                                                                     ns: str) -> None:
    """Attack 3 of issue "Close the holes": synthetic bars on which the strategy wins, decisions and fills
    made with the runner's own model so that the replay agrees, the bot's config hash, and a date 12 h
    ahead. The gate checks the bars against the venue itself and refuses exports dated in the future."""
    start_bot(cluster, operator, ns, "forger")
    # The forger holds the stock edit role in the namespace (inside the trust boundary: it can write the
    # evidence ConfigMap, but it cannot make the venue's market data say what it wants).
    cluster.apply({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "forger"},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
                   "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "forger"}]},
                  namespace=ns)
    runtime = runtime_of(cluster, ns, "forger")
    assert runtime is not None
    honest = prepared_export(runtime)
    synthetic = {sym: [Candle(c.ts, c.open * 1.02, c.high * 1.02, c.low * 1.02, c.close * 1.02, c.volume)
                       for c in bars(sym, EXPORT_BARS, seed=1)] for sym in honest.candles}
    forged = prepared_export(runtime, candles=synthetic)
    assert forged.candles != honest.candles, "the forgery trades on bars of its own"
    assert forged.fills
    # 1. Dated 12 h ahead: refused before anything else, and recorded no later than now.
    ahead = int(time.time() * 1000) + 12 * 3600 * 1000
    write_export(cluster, ns, "forger", forged.model_copy(update={"exported_at": ahead}), user="forger")
    bot = settled(cluster, operator, ns, "forger", "Failed", "Missing")
    assert "in the future; refused" in bot["status"]["replay"]["message"]
    assert bot["status"]["replay"]["exportedAt"] < dt.datetime.fromtimestamp(ahead / 1000, dt.UTC).strftime(
        "%Y-%m-%dT%H:%M:%SZ")
    # 2. Dated now: its bars are not the venue's.
    write_export(cluster, ns, "forger", forged.model_copy(update={"exported_at": int(time.time() * 1000)}),
                 user="forger")

    def refused() -> dict[str, Any]:
        bot = bot_of(cluster, ns, "forger")
        assert "differ from the venue's market data" in bot["status"]["replay"]["message"]
        return bot

    bot = until(operator, refused, "the forged bars to be refused")
    assert reason(bot, "ReplayVerified") == "Failed"
    assert "consensus" not in bot["status"]
    assert_paper(cluster, bot, "ReplayFailed")
    # 3. The honest export after them counts: the future date held nothing back.
    write_export(cluster, ns, "forger", prepared_export(runtime))
    settled(cluster, operator, ns, "forger", "Passed", "Approved")
    until(operator, lambda: bot_of(cluster, ns, "forger")["status"]["effectiveMode"] == "live", "forger live on "
          "honest evidence")


def test_min_paper_minutes_is_rechecked_and_a_recreated_bot_starts_over(cluster: Cluster, operator: OperatorProcess,
                                                                         ns: str, tmp_path: Any) -> None:
    """Passing evidence and an approval do not make up for time in paper; deleting the bot and creating it
    again with mode live (``kubectl replace --force``) skips nothing: a new uid, an empty ledger."""
    start_bot(cluster, operator, ns, "patient", promotion={"minPaperMinutes": 600})
    export_for(cluster, operator, ns, "patient")
    bot = settled(cluster, operator, ns, "patient", "Passed", "Approved")
    assert_paper(cluster, bot, "PaperTimeShort")
    assert "minPaperMinutes=600" in condition_message(bot, "Promoted")
    old_uid = bot["metadata"]["uid"]
    manifest = {k: v for k, v in bot.items() if k in ("apiVersion", "kind", "spec")}
    manifest["metadata"] = {"name": "patient", "namespace": ns}
    path = tmp_path / "patient.json"
    path.write_text(json.dumps(manifest))
    cluster.kubectl("replace", "--force", "-f", str(path))
    fresh = until(operator, lambda: (b := bot_of(cluster, ns, "patient"))["metadata"]["uid"] != old_uid and
                  b.get("status", {}).get("configHash") and b, "the re-created bot reconciled")
    assert reason(fresh, "ReplayVerified") == "Missing", "the evidence of the deleted bot does not carry over"
    assert fresh["status"]["effectiveMode"] == "paper"
    assert fresh["status"]["paperSince"] >= bot["status"]["paperSince"]
    export_for(cluster, operator, ns, "patient")
    again = settled(cluster, operator, ns, "patient", "Passed", "Approved")
    assert_paper(cluster, again, "PaperTimeShort")


def test_too_few_trades_is_insufficient(cluster: Cluster, operator: OperatorProcess, ns: str) -> None:
    start_bot(cluster, operator, ns, "few", promotion={"minTrades": 50})
    export_for(cluster, operator, ns, "few")
    bot = settled(cluster, operator, ns, "few", "InsufficientTrades", "Missing")
    assert_paper(cluster, bot, "ReplayInsufficientTrades")
    assert "minTrades needs 50" in condition_message(bot, "ReplayVerified")


def condition_message(bot: dict[str, Any], type_: str) -> str:
    return str(next(c for c in bot["status"]["conditions"] if c["type"] == type_)["message"])


def test_a_tie_is_rejected(cluster: Cluster, operator: OperatorProcess, server: ReviewerServer, ns: str) -> None:
    # Seed 2 loses money: four built-in reviewers PROCEED (8 half-votes), the performance one holds.
    # alpha proceeds with caution (1), beta, slow and twin hold: 9 half-votes of 9 votes, exactly 50 %.
    server.answers[("alpha", "tie")] = Answer("PROCEED_WITH_CAUTION", "LOW")
    for reviewer in ("beta", "slow", "twin1"):
        server.answers[(reviewer, "tie")] = Answer("HOLD", "LOW")
    start_bot(cluster, operator, ns, "tie", seed=2)
    export_for(cluster, operator, ns, "tie", seed=2)
    bot = settled(cluster, operator, ns, "tie", "Passed", "Rejected")
    assert_paper(cluster, bot, "ConsensusRejected")
    consensus = bot["status"]["consensus"]
    assert (consensus["decision"], consensus["scorePct"], consensus["thresholdPct"]) == ("Rejected", 50, 70)
    assert consensus["message"].startswith("a tie fails")
    assert len(consensus["votes"]) == 9
    assert "Rejected" in event_reasons(cluster, ns, "tie")


def test_a_reviewer_slower_than_its_timeout_counts_against(cluster: Cluster, operator: OperatorProcess,
                                                           server: ReviewerServer, ns: str) -> None:
    # Phase 2 needs 75 %. Built-ins 10 half-votes, alpha, beta and twin with caution 3: 13 of 18 = 72.2 %
    # with the slow reviewer's non-answer; had it answered PROCEED in time, 15 of 18 = 83.3 %.
    server.answers[("slow", "slowpoke")] = Answer(delay=3.0)
    for reviewer in ("alpha", "beta", "twin1"):
        server.answers[(reviewer, "slowpoke")] = Answer("PROCEED_WITH_CAUTION", "LOW")
    start_bot(cluster, operator, ns, "slowpoke", promotion={"phase": 2})
    export_for(cluster, operator, ns, "slowpoke")
    bot = settled(cluster, operator, ns, "slowpoke", "Passed", "Rejected")
    assert_paper(cluster, bot, "ConsensusRejected")
    votes = {v["reviewer"]: v for v in bot["status"]["consensus"]["votes"]}
    assert votes["slow"]["reason"] == "no answer: timeout after 1 s"
    assert (votes["slow"]["verdict"], votes["slow"]["risk"]) == ("HOLD", "MEDIUM")
    assert bot["status"]["consensus"]["scorePct"] == pytest.approx(72.2222, abs=0.001)


def test_duplicate_and_stale_votes_do_not_count(cluster: Cluster, operator: OperatorProcess,
                                                server: ReviewerServer, ns: str) -> None:
    # Two reviewer entries named twin: only the first one's vote counts. Had the second counted, its
    # CRITICAL risk would have halted the bot.
    server.answers[("twin1", "twins")] = Answer("PROCEED", "LOW")
    server.answers[("twin2", "twins")] = Answer("ABORT", "CRITICAL", reason="the second twin objects")
    start_bot(cluster, operator, ns, "twins")
    export_for(cluster, operator, ns, "twins")
    bot = settled(cluster, operator, ns, "twins", "Passed", "Approved")
    until(operator, lambda: bot_of(cluster, ns, "twins")["status"]["effectiveMode"] == "live", "twins live")
    bot = bot_of(cluster, ns, "twins")
    assert_live(cluster, bot, 0, 100.0)
    consensus = bot["status"]["consensus"]
    assert [v["verdict"] for v in consensus["votes"] if v["reviewer"] == "twin"] == ["PROCEED"]
    assert "ignored duplicate vote(s) of twin" in consensus["message"]
    assert {s.reviewer for s in server.seen if s.bot == "twins"} == {"alpha", "beta", "slow", "twin1", "twin2"}
    assert bot["status"]["killMode"] == "off"
    # A vote bound to an older evidence hash is ignored: written into the status by hand, a CRITICAL vote
    # on other evidence changes nothing (the gate re-scores the votes it finds against their evidence).
    stale_vote = {"reviewer": "ghost", "verdict": "ABORT", "risk": "CRITICAL", "reason": "about older evidence",
                  "evidenceHash": "sha256:" + "0" * 64, "at": consensus["votes"][0]["at"]}
    patched = {**consensus, "votes": [*consensus["votes"], stale_vote]}
    cluster.kubectl("patch", "tb", "twins", "-n", ns, "--subresource=status", "--type=merge",
                    "-p", json.dumps({"status": {"consensus": patched}}))
    # The gate never reads a status written by hand: the ledger's record comes back, the edit is reported.
    bot = until(operator, lambda: (b := bot_of(cluster, ns, "twins"))["status"]["consensus"]["votes"] ==
                consensus["votes"] and condition(b, "Intact").get("reason") == "StatusTampered" and b,
                "the hand-written vote to be replaced by the ledger's record")
    assert reason(bot, "ConsensusApproved") == "Approved"
    assert bot["status"]["killMode"] == "off"
    assert_live(cluster, bot, 0, 100.0)
    # The key reached the reviewers' Authorization header and nothing else.
    assert {s.authorization for s in server.seen if s.bot == "twins"} == {f"Bearer {CANARY}"}
    assert CANARY not in json.dumps(bot)
    assert CANARY not in json.dumps(events_of(cluster, ns, "twins"))
    assert CANARY not in operator.log()


def gate_override(name: str, bot: str, reason: str, minutes: float) -> dict[str, Any]:
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=minutes)
    return {"apiVersion": "tradewarden.io/v1alpha1", "kind": "GateOverride", "metadata": {"name": name},
            "spec": {"botName": bot, "reason": reason, "ticket": "INC-4242",
                     "expiresAt": expires.strftime("%Y-%m-%dT%H:%M:%SZ")}}


def as_user(cluster: Cluster, user: str, ns: str, *args: str, manifest: dict[str, Any] | None = None,
            ) -> Any:
    return cluster.kubectl(*args, "-n", ns, "--as", user, input=json.dumps(manifest) if manifest else None,
                           check=False)


def test_the_override_needs_a_gateoverride_a_reason_and_an_expiry_and_tells_the_story(
        cluster: Cluster, operator: OperatorProcess, ns: str) -> None:
    # On call may create and delete GateOverrides and nothing else; a bot editor may edit bots and nothing else.
    for user, rules in (("oncall", [{"apiGroups": ["tradewarden.io"], "resources": ["gateoverrides"],
                                     "verbs": ["create", "delete", "get", "list"]}]),
                        ("author", [{"apiGroups": ["tradewarden.io"], "resources": ["tradingbots"],
                                     "verbs": ["get", "list", "patch", "update"]}])):
        cluster.apply({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": user},
                       "rules": rules}, namespace=ns)
        cluster.apply({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                       "metadata": {"name": user},
                       "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": user},
                       "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]},
                      namespace=ns)
    start_bot(cluster, operator, ns, "emergency")
    # The old annotation, set by whoever may edit the bot, opens nothing any more.
    assert as_user(cluster, "author", ns, "annotate", "tb", "emergency",
                   "tradewarden.io/override-replay-gate=INC-1 let me through").returncode == 0
    export_for(cluster, operator, ns, "emergency", tamper=True)
    bot = settled(cluster, operator, ns, "emergency", "Failed", "Missing")
    assert_paper(cluster, bot, "ReplayFailed")
    refused = as_user(cluster, "author", ns, "create", "-f", "-",
                      manifest=gate_override("mine", "emergency", "trust me", 60))
    assert refused.returncode != 0
    assert "forbidden" in refused.stderr.lower()

    # Longer than 4 hours: not honoured, and said so on both objects.
    assert as_user(cluster, "oncall", ns, "create", "-f", "-",
                   manifest=gate_override("too-long", "emergency", "INC-4242 all night", 300)).returncode == 0
    until(operator, lambda: "is not honoured" in condition_message(bot_of(cluster, ns, "emergency"),
                                                                    "ReplayVerified"), "the long override refused")
    assert condition(cluster.get_json("gateoverride", "too-long", "-n", ns), "Active")["reason"] == "TooLong"
    until(operator, lambda: "OverrideIgnored" in event_reasons(cluster, ns, "emergency"), "OverrideIgnored")
    assert_paper(cluster, bot_of(cluster, ns, "emergency"), "ReplayFailed")
    assert as_user(cluster, "oncall", ns, "delete", "gateoverride", "too-long").returncode == 0

    # One hour: the replay gate opens, the consensus still votes, the bot goes live.
    reason_text = "INC-4242 venue maintenance, replay data incomplete"
    assert as_user(cluster, "oncall", ns, "create", "-f", "-",
                   manifest=gate_override("maintenance", "emergency", reason_text, 60)).returncode == 0
    bot = settled(cluster, operator, ns, "emergency", "Overridden", "Approved")
    until(operator, lambda: bot_of(cluster, ns, "emergency")["status"]["effectiveMode"] == "live", "override live")
    bot = bot_of(cluster, ns, "emergency")
    assert_live(cluster, bot, 0, 100.0)
    assert bot["status"]["replay"]["overrideReason"].startswith(f"{reason_text} (GateOverride maintenance, ticket "
                                                               f"INC-4242, until ")
    assert bot["status"]["replay"]["passed"] is False, "the override does not rewrite what the replay found"
    warnings = [e for e in events_of(cluster, ns, "emergency") if e["reason"] == "Overridden"]
    assert len(warnings) == 1
    assert warnings[0]["type"] == "Warning"
    assert "INC-4242" in warnings[0]["message"]
    active = cluster.get_json("gateoverride", "maintenance", "-n", ns)
    assert condition(active, "Active")["status"] == "True"
    assert active["status"]["effectiveUntil"] == active["spec"]["expiresAt"]
    # The spec cannot be stretched: an override is replaced, never extended.
    stretched = cluster.kubectl("patch", "gateoverride", "maintenance", "-n", ns, "--type=merge",
                                "-p", '{"spec":{"expiresAt":"2099-01-01T00:00:00Z"}}', check=False)
    assert stretched.returncode != 0
    assert "cannot be changed" in stretched.stderr

    # kubectl describe tells the story: the conditions with their reasons and the Events in order.
    story = cluster.kubectl("describe", "tb", "emergency", "-n", ns).stdout
    conditions = story[story.index("Conditions:"):story.index("Config Hash:")]
    for phrase in ("Reason:                Overridden", "Type:                  ReplayVerified",
                   "the replay gate is overridden: INC-4242", "Reason:                Approved",
                   "Type:                  ConsensusApproved", "Reason:                Promoted"):
        assert phrase in conditions, f"{phrase!r} not in the conditions of kubectl describe:\n{story}"
    events = story[story.index("Events:"):]
    for phrase in ("OverrideIgnored", "Warning  Overridden", "INC-4242", "Approved", "Promoted",
                   "RampStep", "live at step 0 of 3: 100 USDT", "effective mode paper -> live"):
        assert phrase in events, f"{phrase!r} not in the Events of kubectl describe:\n{story}"
    assert "Override Reason:   INC-4242" in story

    # The override goes: the replay gate applies again, live ends, the ramp resets.
    assert as_user(cluster, "oncall", ns, "delete", "gateoverride", "maintenance").returncode == 0
    bot = settled(cluster, operator, ns, "emergency", "Failed", "Approved")
    until(operator, lambda: bot_of(cluster, ns, "emergency")["status"]["effectiveMode"] == "paper", "paper again")
    assert_paper(cluster, bot_of(cluster, ns, "emergency"), "ReplayFailed")
    assert {"OverrideEnded", "RampReset"} <= set(event_reasons(cluster, ns, "emergency"))

    # An override lapses by itself at its expiry, with an Event.
    assert as_user(cluster, "oncall", ns, "create", "-f", "-",
                   manifest=gate_override("brief", "emergency", "INC-4243 brief", 0.3)).returncode == 0
    settled(cluster, operator, ns, "emergency", "Overridden", "Approved")
    ended = len([e for e in event_reasons(cluster, ns, "emergency") if e == "OverrideEnded"])
    until(operator, lambda: len([e for e in event_reasons(cluster, ns, "emergency") if e == "OverrideEnded"]) > ended,
          "the override to lapse at its expiry", timeout=90)
    assert reason(bot_of(cluster, ns, "emergency"), "ReplayVerified") == "Failed"
    until(operator, lambda: condition(cluster.get_json("gateoverride", "brief", "-n", ns), "Active").get("reason")
          == "Expired", "the GateOverride to say it expired")


def test_a_risk_edit_while_live_drops_the_bot_to_paper(cluster: Cluster, operator: OperatorProcess,
                                                       ns: str) -> None:
    start_bot(cluster, operator, ns, "edited")
    export_for(cluster, operator, ns, "edited")
    settled(cluster, operator, ns, "edited", "Passed", "Approved")
    until(operator, lambda: bot_of(cluster, ns, "edited")["status"]["effectiveMode"] == "live", "edited live")
    before = runtime_of(cluster, ns, "edited")
    assert before is not None
    cluster.kubectl("patch", "tb", "edited", "-n", ns, "--type=merge",
                    "-p", '{"spec":{"risk":{"maxRiskPerTradePct":0.4}}}')
    bot = settled(cluster, operator, ns, "edited", "Stale", "Approved")
    assert_paper(cluster, bot, "ConfigChanged")
    after = runtime_of(cluster, ns, "edited")
    assert after is not None
    assert after.config_hash != before.config_hash
    assert "config changed" in condition_message(bot, "ReplayVerified")
    # The export of the new config passes again: back to live, and the ramp starts over at step 0.
    export_for(cluster, operator, ns, "edited")
    until(operator, lambda: bot_of(cluster, ns, "edited")["status"]["effectiveMode"] == "live", "live again")
    assert_live(cluster, bot_of(cluster, ns, "edited"), 0, 100.0)
    assert event_reasons(cluster, ns, "edited").count("RampStep") == 2


def test_evidence_older_than_max_age_is_stale(cluster: Cluster, operator: OperatorProcess,
                                              aging: tuple[str, str, float]) -> None:
    ns, name, _promoted = aging
    # Nothing exported since the promotion at the start of the module: at maxEvidenceAgeMinutes=1 the
    # evidence goes stale and the live bot falls back to paper on its own (the operator comes back at
    # the moment the evidence expires).
    bot = settled(cluster, operator, ns, name, "Stale", "Stale", timeout=90)
    until(operator, lambda: bot_of(cluster, ns, name)["status"]["effectiveMode"] == "paper", "aging bot paper")
    bot = bot_of(cluster, ns, name)
    assert_paper(cluster, bot, "ReplayStale")
    assert "maxEvidenceAgeMinutes=1" in condition_message(bot, "ReplayVerified")
    reasons = event_reasons(cluster, ns, name)
    assert {"Stale", "RampReset", "ModeChanged"} <= set(reasons)
    TradingBot.model_validate(bot)  # the status the operator wrote parses as the API's model
