"""Servers hydrodiag is compared with, each run from its own virtual environment (bench/.envs/)."""
