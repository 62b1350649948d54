"""Benchmarks run by `make bench`: a bare grpcio baseline and the real server under mTLS load."""
