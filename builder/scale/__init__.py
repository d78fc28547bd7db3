"""Scale-out: sections run several at once (parallel, workers, ray_executor) and the shared cache."""
