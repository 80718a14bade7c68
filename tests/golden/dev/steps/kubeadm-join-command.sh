sudo kubeadm token create --print-join-command
