"""Grading functions that misbehave, for fault-injection tests (imported by grader worker processes).

`grade_or_fault` grades like `evaluation.grader.grade_pair`, except that the prediction "HANG" sleeps for
ten minutes, "DIE" kills the worker, and, when $TRAPO_TEST_HANG_ONCE names a file that does not exist yet,
the first pair graded by any worker creates it and hangs.
"""

import os
import time


def grade_or_fault(gold, pred, tolerance=None, answer_type=None):
    once = os.environ.get("TRAPO_TEST_HANG_ONCE")
    if once:
        try:
            os.close(os.open(once, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            time.sleep(600)
        except FileExistsError:
            pass
    if pred == "HANG":
        time.sleep(600)
    if pred == "DIE":
        os._exit(3)
    from evaluation.grader import grade_pair

    return grade_pair(gold, pred, tolerance, answer_type)
