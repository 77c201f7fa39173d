"""Tasks as data: task files, dataset loading, demonstration sampling, built-in synthetic tasks.

    task = load_task("sst2")                       # or a path to any task file
    data = load_splits(task, data_dir=...)         # pool + whole eval split + resolved revision
    demos = order_demos(sample_demos(data.pool, k=32, seed=2), seed=2, order=0)
    evaluation = eval_subset(data.eval, task.eval_size)          # permuted with seed 1
    text = render_input(task.template(0), evaluation[0])       # "Sentence: ... Label:"
"""

from iclgd.tasks.loading import FIXTURES_DIR, Example, TaskData, load_splits
from iclgd.tasks.prepare import prepare_data, write_snapshot
from iclgd.tasks.sampling import (
    eval_subset,
    order_demos,
    order_permutation,
    permute,
    sample_demo_indices,
    sample_demos,
)
from iclgd.tasks.task import BUILTIN_DIR, Task, list_tasks, load_task, read_task_file, task_name
from iclgd.tasks.template import render_input, template_fields, template_key, validate_template

__all__ = [
    "BUILTIN_DIR", "FIXTURES_DIR", "Example", "Task", "TaskData", "eval_subset", "list_tasks", "load_splits",
    "load_task", "order_demos", "order_permutation", "permute", "prepare_data", "read_task_file", "render_input",
    "sample_demo_indices", "sample_demos", "task_name", "template_fields", "template_key",
    "validate_template", "write_snapshot",
]
