"""Training: the losses, the timestep sampler, one step's batch loss, and checkpoints."""
