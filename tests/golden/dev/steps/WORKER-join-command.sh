sudo kubeadm token create --print-join-command --ttl 2h
