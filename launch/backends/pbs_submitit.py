"""A submitit executor for PBS Pro / OpenPBS (`qsub -J`) and Torque (`qsub -t`) job arrays.

Registered through submitit's plugin entry points (group `submitit`, names `executor` and
`job_environment`), so `submitit.AutoExecutor(folder, cluster="pbs")` works. Imports only submitit
and the standard library: submitit loads every plugin in each process that uses it.

Job ids are normalised to submitit's form: PBS's `1234[5].server` is `1234_5`, `1234.server` is
`1234`. The id a task reads from its environment is built the same way (from `PBS_ARRAY_ID` or
`PBS_JOBID` plus `PBS_ARRAY_INDEX` / `PBS_ARRAYID`), so driver and task name the same files.
"""
from __future__ import annotations

import functools
import inspect
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import typing as tp
import uuid
from pathlib import Path

from submitit.core import core, job_environment, logger, utils
from submitit.slurm.slurm import SlurmInfoWatcher

FLAVORS = ("pro", "torque")
_ID = re.compile(r"^\s*(\d+)(?:\[(\d*)\])?(?:_(\d+))?(?:\.\S*)?\s*$")


def normalise_job_id(raw: str) -> str:
    """`1234[5].server` -> `1234_5`; `1234[].server`, `1234.server`, `1234` -> `1234`."""
    match = _ID.match(raw)
    if not match:
        raise ValueError(f"not a PBS job id: {raw!r}")
    index = match.group(2) or match.group(3)
    return f"{match.group(1)}_{index}" if index else match.group(1)


def pbs_job_id(job_id: str) -> str:
    """The reverse, for PBS commands: `1234_5` -> `1234[5]`, `1234` -> `1234`."""
    base, _, index = job_id.partition("_")
    return f"{base}[{index}]" if index else base


def sanitise_job_name(name: str, limit: int = 15) -> str:
    """Letters, digits and `- _ + .` only, starting with a letter, at most 15 characters (POSIX qsub)."""
    clean = re.sub(r"[^A-Za-z0-9_+.-]", "_", name or "job")
    return (clean if clean[:1].isalpha() else "j" + clean)[:limit]


def hms(minutes: float) -> str:
    """Walltime: 90 (minutes) -> `01:30:00`; 0.1 -> `00:00:06`."""
    seconds = round(float(minutes) * 60)
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def mem_string(gb: float) -> str:
    """16 -> `16gb`, 0.5 -> `512mb` (PBS size units)."""
    return f"{int(gb)}gb" if gb == int(gb) else f"{int(gb * 1024)}mb"


def slurm_wrapper() -> bool:
    """True when `qstat` (the one on PATH now) is Debian's slurm-wlm-torque Perl wrapper: no `-t`/`-F json`,
    raw Slurm ids, no exit status. Status then comes from Slurm's own accounting."""
    return _is_slurm_wrapper(shutil.which("qstat"))


@functools.lru_cache()
def _is_slurm_wrapper(path: str | None) -> bool:
    try:
        return bool(path) and b"use Slurm" in Path(path).read_bytes()[:8192]  # type: ignore[arg-type]
    except OSError:
        return False


# --- status: `qstat` output -> Slurm's state words (what landscape-status and submitit's wait use) ---

_ACTIVE = {"Q": "PENDING", "H": "PENDING", "W": "PENDING", "T": "PENDING", "M": "PENDING",
           "R": "RUNNING", "B": "RUNNING", "E": "COMPLETING", "S": "SUSPENDED", "U": "SUSPENDED"}
# negative exit codes PBS itself sets (JOB_EXEC_*): PBS Pro job.h, Torque's "Job exit status" page
_KILLED = {"pro": {-29: "TIMEOUT", -28: "TIMEOUT", -27: "OUT_OF_MEMORY", -26: "OUT_OF_MEMORY"},
           "torque": {-11: "TIMEOUT", -12: "TIMEOUT", -10: "OUT_OF_MEMORY"}}


def state_word(code: str, exit_status: tp.Optional[tp.Union[int, str]], flavor: str, comment: str = "") -> str:
    """A PBS state letter (and exit status and comment once finished) as the state word Slurm would give.

    OpenPBS 23.06 gives a deleted subjob `Exit_status` 0 (running when deleted: comment "... terminated by
    user@host"; never ran: "Subjob finished"): only the comment tells it from a success."""
    code = (code or "?").strip()[:1].upper()
    if code in _ACTIVE:
        return _ACTIVE[code]
    if code not in ("F", "X", "C"):
        return "UNKNOWN"
    if exit_status is None or str(exit_status).strip() == "":
        return "CANCELLED"  # PBS Pro: "job was deleted before execution"
    status = int(exit_status)
    if status in _KILLED[flavor]:
        return _KILLED[flavor][status]
    if " terminated" in comment or comment.startswith("Subjob finished"):
        return "CANCELLED"
    if status == 0:
        return "COMPLETED"
    return "CANCELLED" if status >= 256 else "FAILED"  # >= 256: the job shell was killed by signal (qdel)


def _indices(spec: str) -> tp.List[int]:
    """`0-3,7,10-20:5` -> [0, 1, 2, 3, 7, 10, 15, 20]; OpenPBS's `-` (none remaining) -> []."""
    out: tp.List[int] = []
    for part in filter(None, spec.replace(" ", "").strip("-").split(",")):
        rng, _, step = part.partition(":")
        lo, _, hi = rng.partition("-")
        out += range(int(lo), int(hi or lo) + 1, int(step or 1))
    return out


def parse_pro_json(text: str) -> tp.Dict[str, str]:
    """`qstat -f -F json -x -t` (PBS Pro / OpenPBS) -> {normalised job id: state word}.

    Subjobs are keys `1234[5].server`; queued subjobs the server did not list one by one (OpenPBS
    sends `array_indices_remaining` instead, openpbs PR #2141) count as PENDING."""
    jobs = json.loads(text or "{}").get("Jobs", {}) if (text or "").strip() else {}
    states: tp.Dict[str, str] = {}
    for raw_id, attrs in jobs.items():
        states[normalise_job_id(raw_id)] = state_word(attrs.get("job_state", "?"), attrs.get("Exit_status"), "pro",
                                                      str(attrs.get("comment") or ""))
    for raw_id, attrs in jobs.items():
        if str(attrs.get("array", "")).lower() == "true" and attrs.get("job_state") in ("Q", "B", "H"):
            base = normalise_job_id(raw_id)
            for index in _indices(str(attrs.get("array_indices_remaining") or "")):
                states.setdefault(f"{base}_{index}", "PENDING")
    return states


def parse_torque_full(text: str) -> tp.Dict[str, str]:
    """`qstat -f -t` (Torque, and the slurm-wlm-torque wrapper's `qstat -f`) -> {job id: state word}."""
    states: tp.Dict[str, str] = {}
    for block in re.split(r"^Job Id:", text or "", flags=re.M)[1:]:
        lines = block.splitlines()
        attrs = {}
        for line in lines[1:]:
            key, sep, value = line.strip().partition(" = ")
            if sep:
                attrs[key.lower()] = value.strip()
        states[normalise_job_id(lines[0])] = state_word(attrs.get("job_state", "?"), attrs.get("exit_status"),
                                                        "torque")
    return states


def pbs_targets(job_ids: tp.Iterable[str]) -> tp.List[str]:
    """Normalised ids -> what to ask qstat about: `1234_5` -> its array `1234[]` (which also answers for the
    array's own id `1234`, as submitit registers it); a plain `99` -> `99`."""
    arrays = {i.split("_")[0] for i in job_ids if "_" in i}
    return sorted({f"{a}[]" for a in arrays} | {i for i in job_ids if "_" not in i and i not in arrays})


def qstat_command(flavor: str, targets: tp.List[str]) -> tp.List[str]:
    """The status query (`-x`: finished jobs too, where job history is on); under Slurm's wrapper, sacct.
    qstat exits 153 when one of several ids is unknown (a plain job gone from history), yet prints the
    others: that exit status is not a failure."""
    if slurm_wrapper():
        return ["sacct", "-o", "JobID,State", "--parsable2", *[a for t in targets for a in ("-j", t.strip("[]"))]]
    query = ["qstat", "-f", "-F", "json", "-x", "-t"] if flavor == "pro" else ["qstat", "-f", "-t"]
    return ["sh", "-c", '"$@" || [ $? = 153 ]', "qstat", *query, *targets]


def parse_status(flavor: str, text: str) -> tp.Dict[str, str]:
    """Output of `qstat_command` -> {job id: state word}."""
    if slurm_wrapper():
        return {k: v.get("State", "UNKNOWN").split()[0] for k, v in SlurmInfoWatcher().read_info(text).items()}
    return parse_pro_json(text) if flavor == "pro" else parse_torque_full(text)


class PbsInfoWatcher(core.InfoWatcher):
    """Asks qstat about all registered arrays at once (at most every `delay_s`)."""

    flavor = "pro"  # set by the executor that submits

    def _make_command(self) -> tp.Optional[tp.List[str]]:
        targets = pbs_targets(self._registered - self._finished)
        return qstat_command(self.flavor, targets) if targets else None

    def get_state(self, job_id: str, mode: str = "standard") -> str:
        return self.get_info(job_id, mode=mode).get("State") or "UNKNOWN"

    def read_info(self, string: tp.Union[bytes, str]) -> tp.Dict[str, tp.Dict[str, str]]:
        text = string.decode() if isinstance(string, bytes) else string
        try:
            return {job_id: {"State": state} for job_id, state in parse_status(self.flavor, text).items()}
        except (ValueError, KeyError) as err:
            logger.get_logger().warning(f"could not read qstat output ({err}); status may be inaccurate")
            return {}


class PbsJob(core.Job[core.R]):
    _cancel_command = "qdel"
    watcher = PbsInfoWatcher(delay_s=600)

    def cancel(self, check: bool = True) -> None:
        """`qdel 1234[5]` (under the Slurm wrapper, whose qdel kills whole arrays: `scancel 1234_5`)."""
        cmd = ["scancel", self.job_id] if slurm_wrapper() else ["qdel", pbs_job_id(self.job_id)]
        (subprocess.check_call if check else subprocess.call)(cmd, shell=False)


class PbsJobEnvironment(job_environment.JobEnvironment):
    """What a task reads from PBS. Job id: `PBS_ARRAY_ID` (else `PBS_JOBID`) plus the index from
    `PBS_ARRAY_INDEX` (PBS Pro, and Slurm's spank_pbs) or `PBS_ARRAYID` (Torque), normalised."""

    _env = {"job_id": "PBS_JOBID", "num_nodes": "PBS_NUM_NODES", "node": "PBS_NODENUM"}

    @property
    def array_task_id(self) -> tp.Optional[str]:
        return os.environ.get("PBS_ARRAY_INDEX") or os.environ.get("PBS_ARRAYID") or None

    @property
    def array_job_id(self) -> tp.Optional[str]:
        if self.array_task_id is None:
            return None
        return normalise_job_id(os.environ.get("PBS_ARRAY_ID") or os.environ["PBS_JOBID"]).split("_")[0]

    @property
    def raw_job_id(self) -> str:
        return normalise_job_id(os.environ["PBS_JOBID"])

    # one process per task (the executor starts no MPI ranks)
    @property
    def num_tasks(self) -> int:
        return 1

    @property
    def global_rank(self) -> int:
        return 0

    @property
    def local_rank(self) -> int:
        return 0

    def _handle_signals(self, paths: utils.JobPaths, submission: utils.DelayedSubmission) -> None:
        """PBS sends SIGTERM at walltime and on qdel, then SIGKILL `kill_delay` seconds later (10 s by
        default). submitit's default ignores SIGTERM (Slurm warns with USR2 first); here it raises
        SystemExit so that `finally` blocks and atomic writers clean up before the kill."""
        signal.signal(signal.SIGTERM, _terminate)


def _terminate(signum: int, frame: tp.Any) -> None:
    logger.get_logger().warning(f"caught {signal.Signals(signum).name}: walltime or qdel; exiting")
    raise SystemExit(128 + signum)


class PbsExecutor(core.PicklingExecutor):
    """PBS Pro (`flavor="pro"`, `#PBS -J 0-N`) or Torque (`flavor="torque"`, `#PBS -t 0-N`) arrays.

    Parameters (update_parameters, or `pbs_<name>` through AutoExecutor): see `_make_qsub_string`.
    A single submission is a plain job (PBS Pro refuses a one-element `-J`). Requeue on time-out is
    not done by PBS (qrerun needs operator rights): rerunning the caller's command is the recovery.
    """

    job_class = PbsJob

    def __init__(self, folder: tp.Union[str, Path], max_num_timeout: int = 0, max_pickle_size_gb: float = 1.0,
                 python: tp.Optional[str] = None) -> None:
        super().__init__(folder, max_num_timeout=max_num_timeout, max_pickle_size_gb=max_pickle_size_gb)
        self.python = shlex.quote(sys.executable) if python is None else python
        if self.affinity() <= 0:
            raise RuntimeError('Could not find "qsub": is this a PBS (or Torque) login node?')

    @classmethod
    def _equivalence_dict(cls) -> core.EquivalenceDict:
        return {"name": "job_name", "timeout_min": "walltime", "mem_gb": "mem", "nodes": "nodes",
                "cpus_per_task": "ncpus", "gpus_per_node": "ngpus", "tasks_per_node": "tasks_per_node"}

    @classmethod
    def _valid_parameters(cls) -> tp.Set[str]:
        return set(_default_parameters())

    def _convert_parameters(self, params: tp.Dict[str, tp.Any]) -> tp.Dict[str, tp.Any]:
        params = super()._convert_parameters(params)
        if "mem" in params and not isinstance(params["mem"], str):
            params["mem"] = mem_string(float(params["mem"]))
        return params

    def _internal_update_parameters(self, **kwargs: tp.Any) -> None:
        unknown = sorted(set(kwargs) - set(_default_parameters()))
        if unknown:
            valid = "\n  - ".join(f"{k} (default: {v!r})" for k, v in sorted(_default_parameters().items()))
            raise ValueError(f"Unavailable parameter(s): {unknown}\nValid parameters are:\n  - {valid}")
        _make_qsub_string(command="nothing to do", folder=self.folder, **{**self.parameters, **kwargs})
        super()._internal_update_parameters(**kwargs)

    def _internal_process_submissions(self, delayed_submissions: tp.List[utils.DelayedSubmission]
                                      ) -> tp.List[core.Job[tp.Any]]:
        PbsJob.watcher.flavor = self.parameters.get("flavor", "pro")
        if len(delayed_submissions) == 1:
            return super()._internal_process_submissions(delayed_submissions)
        folder = utils.JobPaths.get_first_id_independent_folder(self.folder)
        folder.mkdir(parents=True, exist_ok=True)
        pickles = []
        for delayed in delayed_submissions:
            pickle_path = folder / f"{uuid.uuid4().hex}.pkl"
            delayed.set_timeout(self.parameters.get("walltime", 60), self.max_num_timeout)
            delayed.dump(pickle_path)
            pickles.append(pickle_path)
        array_ex = PbsExecutor(self.folder, self.max_num_timeout, python=self.python)
        array_ex.update_parameters(**self.parameters)
        array_ex.parameters["map_count"] = len(delayed_submissions)
        self._throttle()
        first = array_ex._submit_command(self._submitit_command_str)
        jobs: tp.List[core.Job[tp.Any]] = [PbsJob(folder=self.folder, job_id=f"{first.job_id}_{i}")
                                           for i in range(len(delayed_submissions))]
        for job, pickle_path in zip(jobs, pickles):
            job.paths.move_temporary_file(pickle_path, "submitted_pickle")
        return jobs

    @property
    def _submitit_command_str(self) -> str:
        return " ".join([self.python, "-u -m submitit.core._submit", shlex.quote(str(self.folder))])

    def _make_submission_file_text(self, command: str, uid: str) -> str:
        return _make_qsub_string(command=command, folder=self.folder, **self.parameters)

    def _num_tasks(self) -> int:
        return 1

    def _make_submission_command(self, submission_file_path: Path) -> tp.List[str]:
        # -j/-o repeated on the command line: Slurm's qsub wrapper otherwise adds its own `-o name.o<id>`
        # in the current directory, and a command-line option wins over a directive on every PBS
        return ["qsub", "-j", "oe", "-o", str(_scheduler_log(self.folder)), str(submission_file_path)]

    @staticmethod
    def _get_job_id_from_submission_command(string: tp.Union[bytes, str]) -> str:
        """`1234[].server` (array), `1234.server` (PBS) or `25` (Slurm's wrapper) -> `1234`."""
        text = string.decode() if isinstance(string, bytes) else string
        for line in reversed(text.strip().splitlines()):
            try:
                return normalise_job_id(line.strip())
            except ValueError:
                continue
        raise utils.FailedSubmissionError(f'Could not make sense of qsub output "{text}"')

    @classmethod
    def affinity(cls) -> int:
        if shutil.which("qsub") is None:
            return -1
        return 1 if shutil.which("srun") else 2  # qsub next to srun is most likely Slurm's wrapper


def _scheduler_log(folder: Path) -> Path:
    """What PBS itself writes for the job (before the script redirects to submitit's logs)."""
    return utils.JobPaths.get_first_id_independent_folder(folder) / "pbs_scheduler.log"


@functools.lru_cache()
def _default_parameters() -> tp.Dict[str, tp.Any]:
    spec = inspect.getfullargspec(_make_qsub_string)
    defaults = dict(zip(spec.kwonlyargs, [spec.kwonlydefaults[k] for k in spec.kwonlyargs]))  # type: ignore
    return {k: v for k, v in defaults.items() if k != "map_count"}


def _make_qsub_string(command: str, folder: tp.Union[str, Path], *, flavor: str = "pro",
                      job_name: str = "submitit", queue: tp.Optional[str] = None,
                      account: tp.Optional[str] = None, walltime: float = 60, nodes: int = 1,
                      ncpus: int = 1, ngpus: int = 0, mem: tp.Optional[str] = None,
                      tasks_per_node: int = 1, select: tp.Optional[str] = None,
                      array_parallelism: tp.Optional[int] = None, setup: tp.Optional[tp.List[str]] = None,
                      env: tp.Optional[tp.Dict[str, tp.Any]] = None,
                      directives: tp.Optional[tp.List[str]] = None,
                      map_count: tp.Optional[int] = None) -> str:
    """The job script. Directives for the flavour; then the task's own id, its logs (submitit's
    `<id>_0_log.out/.err`), `cd $PBS_O_WORKDIR`, the exports it needs (PBS exports nothing without
    -V and starts jobs in $HOME with umask 077), the setup lines, and the command.

    walltime: minutes (submitit's timeout_min). mem: e.g. `16gb`. select: PBS Pro only, a whole select statement
    replacing the one built from nodes/ncpus/ngpus/mem. array_parallelism: `%n` (OpenPBS 20+, Torque).
    directives: extra lines, each written as `#PBS <entry>` (e.g. `-l place=excl`, `-W group_list=x`).
    """
    if flavor not in FLAVORS:
        raise ValueError(f"PBS flavor must be one of {FLAVORS}, not {flavor!r}")
    if tasks_per_node != 1:
        raise ValueError("one task per job: use MPI inside the task for more")
    paths = utils.JobPaths(folder)
    lines = ["#!/bin/bash", f"#PBS -N {sanitise_job_name(job_name)}"]
    lines += [f"#PBS -q {queue}"] if queue else []
    lines += [f"#PBS -A {account}"] if account else []
    lines.append(f"#PBS -l walltime={hms(walltime)}")
    if flavor == "pro":
        chunk = f"{nodes}:ncpus={ncpus}" + (f":ngpus={ngpus}" if ngpus else "") + (f":mem={mem}" if mem else "")
        lines.append(f"#PBS -l select={select or chunk}")
    else:
        lines.append(f"#PBS -l nodes={nodes}:ppn={ncpus}" + (f":gpus={ngpus}" if ngpus else ""))
        lines += [f"#PBS -l mem={mem}"] if mem else []
    if map_count:
        cap = f"%{min(map_count, array_parallelism)}" if array_parallelism else ""
        lines.append(f"#PBS {'-J' if flavor == 'pro' else '-t'} 0-{map_count - 1}{cap}")
    lines += ["#PBS -j oe", f"#PBS -o {_scheduler_log(paths.folder)}"]
    lines += [f"#PBS {d}" for d in directives or []]
    log = shlex.quote(str(paths.folder))
    lines += [
        "",
        "# this task's id as submitit names it: 1234[5].server -> 1234_5 (Torque: PBS_ARRAYID)",
        "_index=${PBS_ARRAY_INDEX:-${PBS_ARRAYID:-}}",
        "_array=${PBS_ARRAY_ID:-$PBS_JOBID}",
        "_array=${_array%%.*}",
        "_array=${_array%%\\[*}",
        "SUBMITIT_JOB_ID=${_array}${_index:+_$_index}",
        f'exec >> {log}/"${{SUBMITIT_JOB_ID}}_0_log.out" 2>> {log}/"${{SUBMITIT_JOB_ID}}_0_log.err"',
        'cd "$PBS_O_WORKDIR" || exit 1',
        "export SUBMITIT_EXECUTOR=pbs",
        f"export LANDSCAPE_THREADS={ncpus}",
    ]
    if flavor == "torque" and ngpus:
        lines.append('[ -n "${PBS_GPUFILE:-}" ] && export CUDA_VISIBLE_DEVICES=$(sed "s/.*-gpu//" "$PBS_GPUFILE" '
                     "| paste -sd,)")
    lines += [f"export {k}={shlex.quote(str(v))}" for k, v in (env or {}).items()]
    lines += ["", "# setup", *(setup or [])] if setup else []
    lines += ["", "# command", f"exec {command}", ""]
    return "\n".join(lines)
