"""bastion.proxy"""
