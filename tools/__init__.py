"""Tools that sit on top of the algorithms: Ray sweeps, rliable aggregation, learning-curve plots, the dataset
generator (with its SAC). They read run folders through common.layout; common/ never imports them."""
