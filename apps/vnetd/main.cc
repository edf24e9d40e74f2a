// vnetd: placeholder until the daemon lands.
int main() { return 0; }
