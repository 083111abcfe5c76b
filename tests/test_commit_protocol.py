"""The commit protocol (spark_jobs/jobio.py, "committed outputs") under S3's semantics, which neither a
POSIX disk nor moto reproduce: an object store with no folders and no rename (the stand-in offers none, so
the protocol cannot lean on one; a folder delete is one DELETE per object; a folder has no modification
time), strong list-after-write, one PUT atomic. A
fault-injecting stand-in fails the Nth call of a publish, for every N, and a reader then must see the
previous committed output whole or the new one whole, never a half or a mix. Two attempts of one batch
are interleaved call by call in every order."""

from __future__ import annotations

import itertools
import threading

import pytest

import jobio
from fruits import lake, storage

OUTPUT = "s3://lake/features/batch=2026-03-01/"
QUARANTINE = "s3://lake/quarantine/batch=2026-03-01/"
HOUR_MS = 3600 * 1000
NOW_MS = 1_800_000_000_000


class Crash(Exception):
    """The injected failure."""


class S3Files:
    """jobio's file operations over an in-memory object store with S3's semantics. Every call that
    reaches the store counts; `fail_at` makes that call (0-based) raise before it does anything."""

    def __init__(self):
        self.objects: dict[str, bytes] = {}
        self.calls = 0
        self.fail_at: int | None = None

    def _call(self) -> None:
        if self.fail_at is not None and self.calls == self.fail_at:
            self.fail_at = None
            raise Crash(f"injected failure at call {self.calls}")
        self.calls += 1

    def exists(self, uri: str) -> bool:
        self._call()
        return uri in self.objects or any(key.startswith(uri.rstrip("/") + "/") for key in self.objects)

    def write(self, uri: str, data: bytes) -> None:  # one PUT: atomic
        self._call()
        self.objects[uri] = bytes(data)

    def read(self, uri: str) -> bytes | None:
        self._call()
        return self.objects.get(uri)

    def read_or_none(self, uri: str) -> bytes | None:  # fruits.lake's reader interface
        return self.read(uri)

    def delete(self, uri: str) -> bool:  # a "folder" delete: a listing, then one DELETE per object
        prefix = uri.rstrip("/") + "/"
        self._call()
        keys = sorted(key for key in self.objects if key.startswith(prefix) or key == uri.rstrip("/"))
        for key in keys:
            self._call()
            del self.objects[key]
        return bool(keys)

    def list_files(self, folder_uri: str) -> list[tuple[str, int]]:
        self._call()
        prefix = folder_uri.rstrip("/") + "/"
        return sorted((key[len(prefix) :], len(data)) for key, data in self.objects.items() if key.startswith(prefix))

    def list_folders(self, folder_uri: str) -> list[tuple[str, int]]:
        """Common prefixes, with S3A/EMRFS's modification time for them: 0 (S3 has no folders)."""
        self._call()
        prefix = folder_uri.rstrip("/") + "/"
        names = {key[len(prefix) :].split("/", 1)[0] for key in self.objects if key.startswith(prefix)}
        return sorted((name, 0) for name in names if any(k.startswith(prefix + name + "/") for k in self.objects))


def run_id(hours_ago: float, tag: str) -> str:
    import datetime as dt

    started = dt.datetime.fromtimestamp((NOW_MS - hours_ago * HOUR_MS) / 1000, dt.UTC)
    return f"{started.strftime('%Y%m%dT%H%M%SZ')}-{tag}"


PARTS = ("part-00000.zstd.parquet", "part-00001.zstd.parquet", "_job_metrics.json")


def publish(files, rid: str, parts=PARTS, *, killed: bool = False, sweep: bool = True) -> None:
    """featurize's publish path, call for call: its run files, the quarantine committed, then the features
    committed naming that quarantine; on any error, jobio.discard_runs (as featurize.run does), unless the
    process was `killed` (no except block runs)."""
    features_run, quarantine_run = jobio.run_uri(OUTPUT, rid), jobio.run_uri(QUARANTINE, rid)
    try:
        for name in parts:  # the Spark tasks' writes, each object tagged with its run
            files.write(features_run + name, f"{rid}:{name}".encode())
        files.write(quarantine_run + "part-00000.parquet", f"{rid}:quarantine".encode())
        jobio.commit(files, QUARANTINE, quarantine_run, {"job": "featurize", "rows": 1})
        jobio.commit(files, OUTPUT, features_run, {"job": "featurize", "rows": 2, "quarantine": quarantine_run})
        for output in (QUARANTINE, OUTPUT) if sweep else ():  # work after the commit: a failure must not undo it
            jobio.remove_stale_runs(files, output, now_ms=NOW_MS)
    except BaseException:
        if not killed:
            jobio.discard_runs(files, [(QUARANTINE, quarantine_run), (OUTPUT, features_run)])
        raise


def view(files, parts=PARTS) -> tuple[str, ...] | None:
    """What a reader gets: None (nothing committed) or the committed output's run ids, one per file read
    (a half output raises here: a listed file is missing). Reads bypass fault injection."""
    fail_at, files.fail_at = files.fail_at, None
    try:
        marker = jobio.read_commit(files, OUTPUT)
        if marker is None:
            return None
        assert marker["location"] == jobio.run_uri(OUTPUT, marker["run_id"])
        assert sorted(marker["files"]) == sorted(parts), marker  # whole: every file its run wrote, no other
        contents = [files.objects[uri] for uri in jobio.committed_files(files, OUTPUT)]
        quarantine = files.objects[marker["quarantine"] + "part-00000.parquet"]  # the features' own quarantine
        return tuple(c.decode().split(":", 1)[0] for c in contents + [quarantine])
    finally:
        files.fail_at = fail_at


def whole(rid: str, parts=PARTS) -> tuple[str, ...]:
    return (rid,) * (len(parts) + 1)


def calls_of(action) -> int:
    files = S3Files()
    action(files)
    return files.calls


def test_jobio_writes_the_marker_the_airflow_side_reads():
    assert jobio.COMMIT_MARKER == lake.COMMIT_MARKER
    files = S3Files()
    publish(files, run_id(1, "a"))
    assert lake.read_commit(files, OUTPUT) == jobio.read_commit(files, OUTPUT)
    assert lake.committed_files(files, OUTPUT) == jobio.committed_files(files, OUTPUT)
    assert jobio.committed_files(files, OUTPUT, ".parquet") == [
        jobio.run_uri(OUTPUT, run_id(1, "a")) + name for name in sorted(PARTS) if name.endswith(".parquet")
    ]
    marker = jobio.read_commit(files, OUTPUT)
    assert (marker["output"], marker["run_id"], marker["rows"]) == (OUTPUT, run_id(1, "a"), 2)
    assert marker["bytes"] == sum(len(f"{run_id(1, 'a')}:{name}") for name in PARTS)


def test_commit_refuses_a_folder_that_is_not_its_own_run_or_holds_nothing():
    files = S3Files()
    with pytest.raises(ValueError, match="not a run folder"):
        jobio.commit(files, OUTPUT, "s3://lake/features/batch=2026-03-02/run=x/")
    with pytest.raises(ValueError, match="not a run folder"):
        jobio.commit(files, OUTPUT, OUTPUT)
    with pytest.raises(ValueError, match="holds no file"):
        jobio.commit(files, OUTPUT, jobio.run_uri(OUTPUT, "x"))
    assert files.objects == {}


@pytest.mark.parametrize("killed", [True, False], ids=["process-killed", "exception-then-clean-up"])
def test_a_first_publish_failing_at_any_call_shows_nothing_or_the_whole_output(killed):
    rid = run_id(0, "new")
    total = calls_of(lambda files: publish(files, rid))
    for fail_at in range(total):
        files = S3Files()
        files.fail_at = fail_at
        with pytest.raises(Crash):
            publish(files, rid, killed=killed)
        assert view(files) in (None, whole(rid)), fail_at
        if not killed and view(files) is None:  # the failed run removed its own uncommitted folders
            assert not [key for key in files.objects if key.startswith(OUTPUT)], fail_at
            quarantine = jobio.read_commit(files, QUARANTINE)  # committed first: whole if it is there
            run = [quarantine["location"] + "part-00000.parquet"] if quarantine else []
            assert sorted(files.objects) == ([QUARANTINE + "_committed.json"] if quarantine else []) + run, fail_at


@pytest.mark.parametrize("killed", [True, False], ids=["process-killed", "exception-then-clean-up"])
def test_a_rerun_failing_at_any_call_leaves_the_previous_output_whole_or_the_new_one(killed):
    old, new = run_id(30, "old"), run_id(0, "new")
    committed = S3Files()
    publish(committed, old)
    total = calls_of(lambda files: (files.objects.update(committed.objects), publish(files, new)))
    outcomes = set()
    for fail_at in range(total):
        files = S3Files()
        files.objects = dict(committed.objects)
        files.fail_at = fail_at
        with pytest.raises(Crash):
            publish(files, new, killed=killed)
        seen = view(files)
        assert seen in (whole(old), whole(new)), fail_at
        outcomes.add(seen)
        if seen == whole(old):  # every object of the old run is still there (only a sweep removes it)
            old_runs = {k: v for k, v in committed.objects.items() if f"/run={old}/" in k}
            assert {k: v for k, v in files.objects.items() if f"/run={old}/" in k} == old_runs, fail_at
        # The next attempt completes, and the sweep then leaves only the committed runs.
        publish(files, run_id(0, "next"))
        assert view(files) == whole(run_id(0, "next"))
        jobio.remove_stale_runs(files, OUTPUT, now_ms=NOW_MS + 25 * HOUR_MS)
        jobio.remove_stale_runs(files, QUARANTINE, now_ms=NOW_MS + 25 * HOUR_MS)
        assert {key.split("/run=")[1].split("/")[0] for key in files.objects if "/run=" in key} == {run_id(0, "next")}
        assert view(files) == whole(run_id(0, "next"))
    assert outcomes == {whole(old), whole(new)}  # both sides of the commit were reached


def test_a_failure_after_the_commit_never_deletes_the_committed_output():
    files = S3Files()
    rid = run_id(0, "a")
    publish(files, rid)
    jobio.discard_runs(files, [(QUARANTINE, jobio.run_uri(QUARANTINE, rid)), (OUTPUT, jobio.run_uri(OUTPUT, rid))])
    assert view(files) == whole(rid)


def test_a_clean_up_that_fails_does_not_hide_the_error_that_failed_the_run():
    files = S3Files()
    rid = run_id(0, "a")
    files.fail_at = 3  # the quarantine's part write
    original = files.delete
    files.delete = lambda uri: (_ for _ in ()).throw(OSError("S3 503 SlowDown"))
    with pytest.raises(Crash):
        publish(files, rid)
    files.delete = original
    assert view(files) is None


def run_interleaved(schedule: tuple[str, ...], rids: dict[str, str]) -> S3Files:
    """Two attempts in threads over one store; each store call waits for its turn in `schedule`."""
    store = S3Files()
    store.marker_writers = []
    turn = threading.Condition()
    position = [0]

    class Turn:
        def __init__(self, who: str):
            self.who = who

        def __getattr__(self, name):
            method = getattr(store, name)

            def call(*args):
                with turn:
                    while position[0] < len(schedule) and schedule[position[0]] != self.who:
                        turn.wait(5)
                    result = method(*args)
                    if name == "write" and args[0] == OUTPUT + jobio.COMMIT_MARKER:
                        store.marker_writers.append(self.who)
                    position[0] += 1
                    turn.notify_all()
                    return result

            return call

    errors = []

    def attempt(who):
        try:
            publish(Turn(who), rids[who], parts=PARTS[:1], sweep=False)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)
            with turn:
                position[0] = len(schedule)
                turn.notify_all()

    threads = [threading.Thread(target=attempt, args=(who,)) for who in rids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors and position[0] == len(schedule), (errors, schedule)
    return store


def test_two_interleaved_attempts_each_commit_whole_and_the_last_marker_wins():
    rids = {"A": run_id(0.5, "a"), "B": run_id(0, "b")}
    per_attempt = calls_of(lambda files: publish(files, rids["A"], parts=PARTS[:1], sweep=False))  # the same for both
    schedules = 0
    for slots in itertools.combinations(range(2 * per_attempt), per_attempt):
        schedule = tuple("A" if i in slots else "B" for i in range(2 * per_attempt))
        store = run_interleaved(schedule, rids)
        assert sorted(store.marker_writers) == ["A", "B"]  # each attempt committed
        last = store.marker_writers[-1]
        assert view(store, PARTS[:1]) == whole(rids[last], PARTS[:1]), schedule
        for who, rid in rids.items():  # neither attempt removed the other's output
            assert all(f"{OUTPUT}run={rid}/{name}" in store.objects for name in PARTS[:1]), (who, schedule)
        schedules += 1
    assert schedules > 900  # every order of the two attempts' calls


def test_the_sweep_keeps_an_attempt_still_writing_and_the_committed_run_whatever_their_age():
    files = S3Files()
    committed, superseded, writing = run_id(72, "committed"), run_id(48, "superseded"), run_id(0.1, "writing")
    publish(files, superseded, sweep=False)
    publish(files, committed, sweep=False)
    files.write(jobio.run_uri(OUTPUT, writing) + PARTS[0], b"half")  # an attempt still writing
    files.write(OUTPUT + "run=undated/" + PARTS[0], b"?")  # no time in its id, none from S3: kept
    files.write(OUTPUT + "_quarantine/x", b"q")  # not a run folder
    removed = jobio.remove_stale_runs(files, OUTPUT, now_ms=NOW_MS)
    assert removed == [jobio.run_uri(OUTPUT, superseded)]
    left = {key[len(OUTPUT) :].split("/")[0] for key in files.objects if key.startswith(OUTPUT)}
    assert left == {"_committed.json", f"run={committed}", f"run={writing}", "run=undated", "_quarantine"}
    assert view(files) == whole(committed)
    # Within the grace nothing goes, not even the superseded leftovers of a failed attempt.
    files.write(jobio.run_uri(OUTPUT, run_id(23, "failed")) + PARTS[0], b"x")
    assert jobio.remove_stale_runs(files, OUTPUT, now_ms=NOW_MS) == []


def test_run_ids_sort_by_start_and_give_their_start_back():
    import datetime as dt

    start = dt.datetime(2026, 12, 1, 2, 0, 0, tzinfo=dt.UTC)
    rid = jobio.new_run_id(start)
    assert jobio.run_started_ms(rid) == int(start.timestamp() * 1000)
    assert jobio.run_started_ms("nonsense") is None
    later = jobio.new_run_id(start + dt.timedelta(seconds=1))
    assert sorted([later, rid]) == [rid, later]
    with pytest.raises(ValueError):
        jobio.run_uri(OUTPUT, "a/b")
    assert jobio.run_uri(OUTPUT, rid) == f"{OUTPUT}run={rid}/"


def test_hadoop_files_on_a_local_lake_commit_discard_and_sweep_as_the_stand_in_does(spark, tmp_path):
    """The real HadoopFiles (the jobs' own) on a file:// lake, read back by the Airflow side's reader."""
    import datetime as dt

    store = storage.LocalStore(tmp_path / "lake")
    output = lake.features_uri(store.root, "2026-03-01")
    files = jobio.HadoopFiles(spark)
    old = jobio.new_run_id(dt.datetime(2026, 3, 1, 2, tzinfo=dt.UTC))
    new = jobio.new_run_id()
    for rid in (old, new):
        files.write(jobio.run_uri(output, rid) + "part-00000.parquet", rid.encode())
        files.write(jobio.run_uri(output, rid) + "_temporary/0/part-00001.parquet", b"a task's leftover")
        jobio.commit(files, output, jobio.run_uri(output, rid), {"rows": 1})
    part = jobio.run_uri(output, new) + "part-00000.parquet"
    assert lake.committed_files(store, output) == jobio.committed_files(files, output) == [part]
    assert store.read(part) == new.encode()
    assert not jobio.discard_run(files, output, jobio.run_uri(output, new))  # committed: kept
    assert jobio.remove_stale_runs(files, output) == [output + f"run={old}/"]  # dated by its id, days ago
    assert store.list_children(output) == [f"run={new}"]
    failed = jobio.new_run_id()
    files.write(jobio.run_uri(output, failed) + "part-00000.parquet", b"x")
    assert jobio.discard_run(files, output, jobio.run_uri(output, failed))
    assert store.list_children(output) == [f"run={new}"] and store.read(part) == new.encode()
