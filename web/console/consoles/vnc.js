// The graphical console: noVNC on a websocket that carries the VM's VNC
// server (raw RFB).
import RFB from '../vendor/novnc/core/rfb.js';

/**
 * openVNC draws the VM's screen in el, connected to url; onState gets
 * connecting, connected, closed or failed. It returns {close, ctrlAltDel}.
 */
export function openVNC(el, url, onState) {
  onState('connecting');
  const rfb = new RFB(el, url, { wsProtocols: ['binary'] });
  rfb.scaleViewport = true;
  rfb.resizeSession = false;
  rfb.focusOnClick = true;
  rfb.addEventListener('connect', () => {
    onState('connected');
    rfb.focus();
  });
  rfb.addEventListener('disconnect', (e) => onState(e.detail.clean ? 'closed' : 'failed'));
  let open = true;
  rfb.addEventListener('disconnect', () => {
    open = false;
  });
  return {
    close() {
      if (open) {
        open = false;
        rfb.disconnect();
      }
    },
    ctrlAltDel() {
      rfb.sendCtrlAltDel();
    },
  };
}
