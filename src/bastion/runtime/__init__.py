"""bastion.runtime"""
