"""Stage 2 (pure): the graph, its segments, the memory, pricing and link models, the planner and plan.json."""
