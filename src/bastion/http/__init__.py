"""bastion.http"""
