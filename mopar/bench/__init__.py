"""The benchmark (the peer, the model served whole, the model partitioned) and the link calibration."""
