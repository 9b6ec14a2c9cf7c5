from slice_runtime.worker.entry import run_module

run_module()
